#!/usr/bin/env bash
# The ImageNet-samples study (1,300 val / 1,000 train images; results/imagenet-samples/README.md):
# lay the samples out, then for MobileNetV2 (mobilenet_v2_q8) and EfficientNet-Lite0
# (efficientnet_lite0): the four ratio modes at MobileNetV2's table ratios 0.7/0.75/0.8/0.9/0.97,
# the energy modes at the paper's thresholds, the rest of the paper's ratio grid; then the
# calibration-size sweep, compression time / peak memory per phase and CPU speed, and the renders.
# Resumable: every sweep skips the points already in its results.json, the benchmarks --resume.
# Model Folding is not run: balf's Model Folding supports ResNets only (not inverted residuals).
# SHARED_DIR: the samples folder (default ../shared/data/imagenet-samples). MODELS: the models.
# Extra arguments go to the sweeps, e.g. --threads 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
read -r -a MODELS <<< "${MODELS:-mobilenet_v2_q8 efficientnet_lite0}"
RATIO_MODES=(flops_auto params_auto uniform uniform_act_aware)
OUT=results/imagenet-samples/benchmarks
bash scripts/imagenet/get_samples.sh "${SHARED_DIR:-../shared/data/imagenet-samples}" datasets/imagenet-samples
for model in "${MODELS[@]}"; do
  S=(-m balf_paper.experiments factorize --dataset imagenet-samples --model "$model")
  "$PY" "${S[@]}" --knobs 0.7 0.75 0.8 0.9 0.97 --modes "${RATIO_MODES[@]}" "$@"
  "$PY" "${S[@]}" --modes energy_act_aware energy "$@"
  "$PY" "${S[@]}" --modes "${RATIO_MODES[@]}" "$@"
  "$PY" -m balf_paper.experiments calib-size --dataset imagenet-samples --model "$model" "$@"
done
"$PY" scripts/imagenet/measure_compression_time.py --resume --models "${MODELS[@]}" \
  --data-root datasets/imagenet-samples --real-calib-size 1000 --batch-size 50 --ratio 0.9 \
  --out "$OUT/compression_time.json"
"$PY" scripts/imagenet/measure_speed.py --models "${MODELS[@]}" --ratios 0.97 0.9 --batch-sizes 1 8 \
  --warmup 2 --repeats 10 --data-root datasets/imagenet-samples --calib-size 1000 --calib-batch-size 50 \
  --out-dir "$OUT"
"$PY" scripts/render_results.py --datasets imagenet-samples --models "${MODELS[@]}"
