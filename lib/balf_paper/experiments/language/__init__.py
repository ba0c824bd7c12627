"""Language-model experiments: SmolLM2 on WikiText-2 perplexity, all-MiniLM-L6-v2 on STS-B Spearman.

Compresses real transformer weights with every rank rule, with whole-model and block-by-block
calibration (:class:`balf.BlockByBlock`), and stores one JSON per point; tables and the figure
are rendered from the stored points. Needs ``transformers`` (and, for SmolLM2's GGUF release,
``gguf`` and ``accelerate``); entry point ``scripts/language/lm_sweep.py``.
"""
