"""``python -m balf_paper.experiments EXPERIMENT --dataset NAME [options]``
(see :mod:`balf_paper.experiments.cli.main`)."""

import sys

from balf_paper.experiments.cli.main import main
from balf_paper.experiments.cli.options import run_script

sys.argv[0] = "balf_paper.experiments"  # argparse's prog and run_script's error prefix
run_script(main)
