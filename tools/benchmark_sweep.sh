#!/usr/bin/env bash
# How R50-FPN inference and training time grow with image size (square 512, 800, 1333) and batch (1, 2, 4),
# resdet against torchvision's model with the same weights (tools/benchmark.py --compare torchvision), 2 threads.
# Prints, per point, "# <1-minute load> <arguments>" and then tools/benchmark.py's JSON line. BENCHMARKS.md holds
# two runs of
#   tools/when_quiet tools/benchmark_sweep.sh
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
common=(tools/benchmark.py --config configs/torchvision/frcnn_r50_fpn.yaml --compare torchvision --threads 2
        --aspect 1 --json)
size() { echo INPUT.MIN_SIZE_TEST "$1" INPUT.MAX_SIZE_TEST "$1" "INPUT.MIN_SIZE_TRAIN ($1,)" INPUT.MAX_SIZE_TRAIN "$1" \
              MODEL.ROI_HEADS.NUM_CLASSES 80; }
point() { echo "# $(cut -d' ' -f1 /proc/loadavg) $*"; "$PYTHON" "${common[@]}" "$@" 2>/dev/null | tail -1; }
for s in 512 800 1333; do point --task infer --batch 1 --iters 5 --warmup 2 $(size $s); done
for b in 2 4; do point --task infer --batch $b --iters 5 --warmup 2 $(size 512); done
for s in 512 800 1333; do point --task train --batch 2 --iters 2 --warmup 1 $(size $s); done
for b in 1 4; do point --task train --batch $b --iters 3 --warmup 1 $(size 512); done
