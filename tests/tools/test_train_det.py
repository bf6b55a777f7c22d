"""tools/train_det.py and tools/demo.py end to end on the toy data: train, resume, eval-only (COCO and
VOC) checked against independent evaluations of the dumped detections, the demo, missing data."""
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resdet.data.datasets import TOY_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/toy_frcnn_r18_fpn.yaml"
# Small and fast: 2 images per batch at 96 px, few proposals; the pipeline is the real one.
FAST = ["DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SEED", "0", "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MIN_SIZE_TEST", "96", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "128", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "64", "SOLVER.WARMUP_ITERS", "5", "SOLVER.BASE_LR", "0.005", "SOLVER.CHECKPOINT_PERIOD", "20",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def run_tool(tool, args, datasets_root, timeout=300):
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, os.path.join("tools", tool), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check(result):
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(toy_datasets, tmp_path_factory):
    """20 iterations, then --resume to 40; returns the output dir."""
    out = str(tmp_path_factory.mktemp("det") / "out")
    common = ["--config", CONFIG, *FAST, "OUTPUT_DIR", out, "DATASETS.TEST", "()"]
    check(run_tool("train_det.py", [*common, "SOLVER.MAX_ITER", "20"], toy_datasets))
    check(run_tool("train_det.py", ["--resume", *common, "SOLVER.MAX_ITER", "40"], toy_datasets))
    return out


def test_train_then_resume(trained):
    rows = [json.loads(line) for line in open(os.path.join(trained, "metrics.json"))]
    iterations = [row["iteration"] for row in rows if "total_loss" in row]
    assert min(iterations) < 20 <= max(iterations) and max(iterations) == 39
    assert all(np.isfinite(row["total_loss"]) for row in rows if "total_loss" in row)
    assert "training from iteration 20 to 40" in open(os.path.join(trained, "log.txt")).read()
    assert open(os.path.join(trained, "last_checkpoint")).read().strip() == "model_final.pth"
    for name in ("config.yaml", "model_final.pth"):
        assert os.path.isfile(os.path.join(trained, name)), name


def test_eval_only_coco_matches_pycocotools(trained, toy_datasets):
    # 50 proposals an image keep the two recall computations short
    check(run_tool("train_det.py", ["--eval-only", "--config", CONFIG, *FAST, "OUTPUT_DIR", trained,
                                    "TEST.EVAL_PROPOSALS", "True", "MODEL.RPN.POST_NMS_TOPK_TEST", "50"], toy_datasets))
    everything = json.load(open(os.path.join(trained, "eval", "results.json")))
    results = everything["bbox"]
    assert {f"AP-{name}" for name in TOY_CLASSES} <= set(results)
    detections = json.load(open(os.path.join(trained, "eval", "coco_instances_results.json")))
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    gt = COCO(os.path.join(str(toy_datasets), "toy", "coco", "annotations", "instances_val.json"))
    evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert results["AP"] == pytest.approx(100 * evaluation.stats[0], abs=0.01)
    assert results["AP50"] == pytest.approx(100 * evaluation.stats[1], abs=0.01)
    # proposal recall: pycocotools on the written proposals as class-less detections
    proposals = json.load(open(os.path.join(trained, "eval", "box_proposals.json")))
    recall = COCOeval(gt, gt.loadRes(proposals), "bbox")
    recall.params.useCats, recall.params.maxDets = 0, [1, 10, 1000]
    recall.evaluate(), recall.accumulate(), recall.summarize()
    assert everything["box_proposals"]["AR@1000"] == pytest.approx(100 * recall.stats[8], abs=0.01)
    assert everything["box_proposals"]["ARs@1000"] == pytest.approx(100 * recall.stats[9], abs=0.01)


def devkit_ap(gt, detections, use_07: bool) -> float:
    """The VOC devkit's AP for one class. gt: {image: (boxes (G,4) 1-based, difficult (G,))}."""
    npos = sum(int((~difficult).sum()) for _, difficult in gt.values())
    used = {image: np.zeros(len(boxes), bool) for image, (boxes, _) in gt.items()}
    tp, fp = [], []
    for det in sorted(detections, key=lambda d: -d["score"]):
        boxes, difficult = gt.get(det["image"], (np.zeros((0, 4)), np.zeros(0, bool)))
        b = np.asarray(det["box"], float)
        best, best_iou = -1, 0.0
        for index, g in enumerate(boxes):  # the devkit's own loop, written plainly on purpose
            iw = min(b[2], g[2]) - max(b[0], g[0]) + 1
            ih = min(b[3], g[3]) - max(b[1], g[1]) + 1
            if iw > 0 and ih > 0:
                inter = iw * ih
                union = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - inter
                if inter / union > best_iou:
                    best, best_iou = index, inter / union
        if best_iou > 0.5 and difficult[best]:
            continue
        is_tp = best_iou > 0.5 and not used[det["image"]][best]
        if is_tp:
            used[det["image"]][best] = True
        tp.append(float(is_tp)), fp.append(float(not is_tp))
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(npos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
    if use_07:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0
                              for t in np.arange(0, 1.1, 0.1)]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def read_voc_ground_truth(voc_root: str, image_ids, class_name: str):
    gt = {}
    for image in image_ids:
        root = ET.parse(os.path.join(voc_root, "Annotations", f"{image}.xml")).getroot()
        objects = [o for o in root.findall("object") if o.find("name").text == class_name]
        boxes = np.array([[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
                          for o in objects]).reshape(-1, 4)
        difficult = np.array([int(o.find("difficult").text) == 1 for o in objects], bool)
        gt[image] = (boxes, difficult)
    return gt


def test_eval_only_voc_matches_devkit_rules(trained, toy_datasets):
    out = os.path.join(trained, "voc")
    check(run_tool("train_det.py", ["--eval-only", "--config", CONFIG, *FAST, "OUTPUT_DIR", out,
                                    "MODEL.WEIGHTS", os.path.join(trained, "model_final.pth"),
                                    "DATASETS.TEST", "('toy_voc_test',)"], toy_datasets))
    results = json.load(open(os.path.join(out, "eval", "results.json")))["voc"]
    detections = json.load(open(os.path.join(out, "eval", "voc_detections.json")))
    voc_root = os.path.join(str(toy_datasets), "toy", "voc", "VOC2007")
    image_ids = open(os.path.join(voc_root, "ImageSets", "Main", "test.txt")).read().split()
    classes = sorted({d["class"] for d in detections} | set(results["per_class_07"]))
    aps07, aps12 = [], []
    for name in classes:
        gt = read_voc_ground_truth(voc_root, image_ids, name)
        mine = [d for d in detections if d["class"] == name]
        aps07.append(devkit_ap(gt, mine, use_07=True)), aps12.append(devkit_ap(gt, mine, use_07=False))
    assert results["AP50_07"] == pytest.approx(100 * np.mean(aps07), abs=0.01)
    assert results["AP50_12"] == pytest.approx(100 * np.mean(aps12), abs=0.01)


def test_demo_draws_one_image_per_input(trained, toy_datasets, tmp_path):
    images = sorted(os.listdir(os.path.join(str(toy_datasets), "toy", "coco", "val")))[:3]
    inputs = [os.path.join(str(toy_datasets), "toy", "coco", "val", name) for name in images]
    check(run_tool("demo.py", ["--config", CONFIG, "--input", *inputs, "--output", str(tmp_path / "vis"),
                               "--score-thresh", "0.0", "INPUT.MIN_SIZE_TEST", "96",
                               "MODEL.WEIGHTS", os.path.join(trained, "model_final.pth")], toy_datasets))
    written = sorted(os.listdir(tmp_path / "vis"))
    assert written == images
    import cv2

    for name in written:
        drawn = cv2.imread(str(tmp_path / "vis" / name))
        original = cv2.imread(os.path.join(str(toy_datasets), "toy", "coco", "val", name))
        assert drawn.shape == original.shape


def test_missing_coco_fails_fast(tmp_path):
    start = time.monotonic()
    result = run_tool("train_det.py", ["--config", "configs/coco_frcnn_r101.yaml", "OUTPUT_DIR", str(tmp_path / "o")],
                      tmp_path / "empty")
    assert result.returncode != 0
    assert time.monotonic() - start < 30
    assert "Traceback" not in result.stderr
    assert os.path.join(str(tmp_path / "empty"), "coco") in result.stderr
