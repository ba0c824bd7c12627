#!/usr/bin/env bash
# Train ResNet-20 and ResNet-56 -> results/<dataset>/checkpoints/<arch>/model.pt. Resumable from last.pt.
#   bash scripts/cifar10/pretrain_resnet.sh                        # original CIFAR-10, the paper's recipe
#                                                                  # (configs/pretrain_resnet.yaml: 200 epochs, x0.1 at 100/150)
#   bash scripts/cifar10/pretrain_resnet.sh --dataset cifar10-jpeg # CIFAR-10 (JPEG release), CPU schedule:
#       cosine, Nesterov, wd 5e-4; ResNet-20 30 epochs, ResNet-56 20. Measured per epoch on 2 CPU cores:
#       ResNet-56 5.5-8.5 min beside a job started with `chrt --idle 0` but 18 min beside a `nice -n 19`
#       one (ResNet-20: 4 min, beside nice-19 jobs). Run other work at idle priority while training.
# Further arguments are passed on, e.g. --max-epochs-this-run 10 or --data-root DIR.
set -euo pipefail
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # no busy-waiting threads on a shared CPU
cd "$(dirname "$0")/../.."
dataset=cifar10
if [ "${1:-}" = "--dataset" ]; then dataset="${2:?--dataset needs a value}"; shift 2; fi
case "$dataset" in
  cifar10) recipe=(); specs="resnet20: resnet56:" ;;
  cifar10-jpeg)
    recipe=(--schedule cosine --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 --batch-size 128 --seed 0)
    specs="resnet20:30 resnet56:20" ;;
  *) echo "pretrain_resnet.sh: unknown dataset '$dataset' (cifar10 | cifar10-jpeg)" >&2; exit 2 ;;
esac
for spec in $specs; do
  arch="${spec%%:*}"; epochs="${spec##*:}"
  "${PYTHON:-python3}" scripts/cifar10/pretrain_resnet.py --arch "$arch" --dataset "$dataset" \
    ${epochs:+--epochs "$epochs"} "${recipe[@]}" "$@"
done
