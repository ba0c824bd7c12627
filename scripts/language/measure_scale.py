"""Scale benchmark: whole-model vs block-by-block compression of Llama-style random-weight models.

Peak memory above the weights and compression time over a forward pass, per (hidden, blocks) and
strategy, each measured in a fresh subprocess; writes ``results/benchmarks/block_scale.{json,md}``
(see :mod:`balf_paper.experiments.benchmarks.block_scale`). Needs ``transformers``.

Example:
    python scripts/language/measure_scale.py --sizes 512x4:32 1024x4:16 2048x4:8
"""

from __future__ import annotations

from balf_paper.experiments.benchmarks.block_scale import main
from balf_paper.experiments.cli.options import run_script

__all__ = ["main"]

if __name__ == "__main__":
    run_script(main)
