"""Language tasks: a causal LM's perplexity on WikiText-2 and a sentence encoder's STS-B Spearman
correlation (:mod:`.task`); text files (:mod:`.text_data`), local Hugging Face models
(:mod:`.models`) and the metrics (:mod:`.metrics`). Needs ``transformers``."""
