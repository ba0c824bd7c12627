#!/usr/bin/env bash
# Both language sweeps in one lane, the most informative points first (each call resumes):
# SmolLM2 and MiniLM at 0.8 and 0.6, then SmolLM2's remaining ratios, then MiniLM's.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/language/smollm2_wikitext.sh --ratios 0.8 0.6 "$@"
bash scripts/language/minilm_stsb.sh --ratios 0.8 0.6 "$@"
bash scripts/language/smollm2_wikitext.sh "$@"
bash scripts/language/minilm_stsb.sh "$@"
