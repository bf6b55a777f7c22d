#!/usr/bin/env bash
# `make demo`: the main job on the embedded toy data, end to end on the CPU.
#   1. generate the synthetic shapes datasets (COCO json, VOC tree, ImageFolder classes)
#   2. train the toy Faster R-CNN (R18-FPN) and evaluate COCO AP on toy_coco_val
#   3. draw its detections on a few validation images
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export RESDET_DATASETS="${RESDET_DATASETS:-./datasets}"
OUT="${DEMO_OUTPUT:-output/demo}"

$PY tools/make_toy_data.py --out "$RESDET_DATASETS/toy"
$PY tools/train_det.py --config configs/toy_frcnn_r18_fpn.yaml OUTPUT_DIR "$OUT/det"
$PY tools/demo.py --config configs/toy_frcnn_r18_fpn.yaml --input "$RESDET_DATASETS/toy/coco/val" \
    --output "$OUT/vis" --max-images 8 --score-thresh 0.3 MODEL.WEIGHTS "$OUT/det/model_final.pth"
echo "demo: metrics in $OUT/det/eval/results.json, drawn detections in $OUT/vis"
