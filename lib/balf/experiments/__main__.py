"""``python -m balf.experiments EXPERIMENT --dataset NAME [options]`` (see :mod:`.main`)."""

import sys

from balf.experiments.main import main
from balf.experiments.options import run_script

sys.argv[0] = "balf.experiments"  # argparse's prog and run_script's error prefix
run_script(main)
