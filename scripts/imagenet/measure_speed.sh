#!/usr/bin/env bash
# Experiment 6: latency/throughput of resnet50 and vit_b_16, original and flops_auto 0.9 ... 0.3,
# at batch sizes 1, 8, 32 (configs/imagenet_measure_speed.yaml) -> results/benchmarks/speed_<device>.*
# Extra arguments are passed on, e.g. --synthetic --calib-size 64, or --channels-last.
# Latency budgets: --mode latency_auto (-> results/benchmarks/.../latency_<device>.*); the runs
# behind the latency tables of results/benchmarks/README.md are listed there and recorded in
# each JSON's "command".
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" scripts/imagenet/measure_speed.py "$@"
