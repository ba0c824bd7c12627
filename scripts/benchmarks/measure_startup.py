"""Start-up cost of the packages and the scripts: ``import balf``, ``import balf_paper``, and the
``--help`` of each sweep script, as wall time and CPU time (user + system) of a fresh process.

Wall time depends on what else the machine runs; CPU time much less. Each command runs
``--repeats`` times and the medians are kept. Writes ``results/benchmarks/startup.json`` with
the command that made it.

    python scripts/benchmarks/measure_startup.py [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

COMMANDS = {
    "import balf": [sys.executable, "-c", "import balf"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import balf_paper.experiments": [sys.executable, "-c", "import balf_paper.experiments"],
    "factorize --dataset cifar10 --help": [
        *(sys.executable, "-m", "balf_paper.experiments", "factorize"),
        *("--dataset", "cifar10", "--help"),
    ],
    "python -m balf_paper.experiments --help": [
        sys.executable, "-m", "balf_paper.experiments", "--help"
    ],
}


def measure(command: list[str]) -> tuple[float, float, str]:
    """``(wall seconds, CPU seconds, stderr)`` of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/startup.json"))
    args = parser.parse_args(argv)
    rows = {}
    for name, command in COMMANDS.items():
        runs = [measure(command) for _ in range(args.repeats)]
        rows[name] = {
            "wall_s": round(statistics.median(r[0] for r in runs), 3),
            "cpu_s": round(statistics.median(r[1] for r in runs), 3),
            "prints_to_stderr": any(r[2].strip() for r in runs),
        }
        print(f"{name:45s} wall {rows[name]['wall_s']:6.2f} s   cpu {rows[name]['cpu_s']:6.2f} s")
    load = os.getloadavg()[0]
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in [
            "scripts/benchmarks/measure_startup.py",
            *map(str, argv if argv is not None else sys.argv[1:]),
        ]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}",
        "repeats": args.repeats,
        "rows": rows,
    }
    out = args.out if args.out.is_absolute() else REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    return result


if __name__ == "__main__":
    main()
