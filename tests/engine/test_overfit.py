"""Training works: the toy detector, trained from scratch by tools/train_det.py (config and overrides, seeding,
the detection train loader, the model and its losses, targets and samplers, AdamW, bf16 autocast, the trainer
and its hooks, the final evaluation), overfits a handful of training scenes to COCO AP50 >= 95 on those same
scenes, as pycocotools measures the detections the tool dumps. A broken loss, target or sampler fails it."""
import contextlib
import io
import json
import os
import subprocess
import sys
from typing import Dict, Tuple

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resdet.data import make_toy_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/toy_frcnn_r18_fpn_scratch.yaml"  # no pretrained weights exist in a test
NUM_SCENES = 4  # 9 objects of all 4 classes with the data seed below
DATA_SEED = 0
MIN_AP50 = 95.0
# The recipe, changed only where a handful of scenes asks for it; ~100 iterations take ~25 s on 2 quiet cores.
OVERFIT = [
    "SOLVER.IMS_PER_BATCH", str(NUM_SCENES),  # every scene in every batch
    "DATALOADER.ASPECT_RATIO_GROUPING", "False",  # grouping would split the scenes by orientation
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",  # one scale: learn it, test at it
    # AdamW at 1e-3 reaches AP50 100 by iteration 80 with model seeds 0, 1 and 2; 2e-3 is unstable
    "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_ITERS", "10", "SOLVER.STEPS", "(80,)", "SOLVER.MAX_ITER", "100",
    "TEST.EVAL_PERIOD", "0",  # evaluate once, after the last iteration
    "SEED", "0",
]


@pytest.fixture
def scenes(tmp_path) -> Tuple[str, str]:
    """(COCO json, image folder) of the first NUM_SCENES toy training scenes, and nothing else."""
    root = make_toy_data(str(tmp_path / "toy"), seed=DATA_SEED, cls_per_class={"train": 0},
                         det_images={"train": NUM_SCENES})
    return (os.path.join(root, "coco", "annotations", "instances_train.json"),
            os.path.join(root, "coco", "train"))


def coco_ap50(json_file: str, detections_file: str) -> float:
    """Box AP at IoU 0.5, in %, of a COCO results file against a COCO json, by pycocotools alone."""
    with open(detections_file) as file:
        detections = json.load(file)
    if not detections:  # loadRes cannot take an empty list; a broken detector may find nothing
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground_truth = COCO(json_file)
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return 100 * float(evaluation.stats[1])


def last_losses(output_dir: str) -> Dict[str, float]:
    """The losses of the last metrics.json row that has them: what a failure message should show."""
    with open(os.path.join(output_dir, "metrics.json")) as file:
        rows = [json.loads(line) for line in file]
    last = [row for row in rows if "total_loss" in row][-1]
    return {key: round(value, 4) for key, value in last.items() if "loss" in key}


def test_detector_overfits_a_handful_of_scenes(scenes, tmp_path):
    """Train on NUM_SCENES scenes, test on the same scenes: a detector that cannot fit them does not train."""
    json_file, image_root = scenes
    dataset = f"coco:{json_file}:{image_root}"
    output_dir = str(tmp_path / "out")
    command = [sys.executable, os.path.join("tools", "train_det.py"), "--config", CONFIG, *OVERFIT,
               "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", f"('{dataset}',)", "OUTPUT_DIR", output_dir]
    env = dict(os.environ, OMP_NUM_THREADS="2")  # the same threads, so the same numbers, on any machine
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    ap50 = coco_ap50(json_file, os.path.join(output_dir, "eval", "coco_instances_results.json"))
    assert ap50 >= MIN_AP50, \
        f"AP50 {ap50:.1f} < {MIN_AP50} on the training scenes; last losses {last_losses(output_dir)}"
