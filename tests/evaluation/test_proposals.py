"""Proposal recall: COCO AR of class-less proposals, against a hand computation and pycocotools (useCats=0) run on
the proposals file the evaluator writes."""
import importlib.util
import json

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resdet.evaluation.proposals import PROPOSALS_FILE, ProposalEvaluator

BACKENDS = ["pycocotools"] + (["faster_coco_eval"] if importlib.util.find_spec("faster_coco_eval") else [])

# Image 1: one large box, hit exactly. Image 2: a medium box hit at IoU 1600 / 1920 = 0.833 and a small one at
# 400 / 600 = 0.667, behind a first-ranked proposal that hits nothing. Two categories: proposals have none.
GROUND_TRUTH = {
    "images": [{"id": 1, "width": 300, "height": 300}, {"id": 2, "width": 300, "height": 300}],
    "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [200, 200, 20, 20], "area": 400, "iscrowd": 0},
    ],
}
PROPOSALS = {1: [[0.0, 0, 100, 100]], 2: [[250.0, 0, 290, 40], [10, 10, 50, 58], [200, 200, 220, 230]]}  # xyxy


def _evaluate(tmp_path, backend, max_dets):
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(GROUND_TRUTH))
    evaluator = ProposalEvaluator("hand", str(tmp_path), distributed=False, json_file=str(json_file), backend=backend,
                                  max_dets=max_dets)
    for image_id, boxes in PROPOSALS.items():  # in RPN rank order
        evaluator.process([{"image_id": image_id}], [{"proposals": torch.tensor(boxes)}])
    return evaluator.evaluate()["box_proposals"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_average_recall_equals_a_hand_computation(tmp_path, backend):
    metrics = _evaluate(tmp_path, backend, (1, 100))
    # thresholds 0.5:0.05:0.95: the large box is recalled at all 10, the medium one at 7 (<= 0.8), the small at 4
    assert metrics["AR@100"] == pytest.approx(100 * (10 + 7 + 4) / 30)
    assert (metrics["ARl@100"], metrics["ARm@100"], metrics["ARs@100"]) == pytest.approx((100, 70, 40))
    # one proposal per image: image 2's first-ranked proposal hits nothing, so only the large box is recalled
    assert metrics["AR@1"] == pytest.approx(100 * 10 / 30)
    assert metrics["ARs@1"] == 0


def test_equals_pycocotools_on_the_written_proposals(tmp_path):
    metrics = _evaluate(tmp_path, "pycocotools", (100, 1000))
    gt = COCO(str(tmp_path / "gt.json"))
    written = json.loads((tmp_path / "eval" / PROPOSALS_FILE).read_text())
    assert [r["bbox"] for r in written if r["image_id"] == 2][1] == [10, 10, 40, 48]  # xywh, rank order kept
    evaluation = COCOeval(gt, gt.loadRes(written), "bbox")
    evaluation.params.useCats = 0
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    # stats[8]: AR at maxDets[2] = 100, all areas; 9, 10, 11: small, medium, large
    assert metrics["AR@100"] == pytest.approx(100 * evaluation.stats[8])
    assert [metrics[f"AR{s}@100"] for s in "sml"] == pytest.approx(list(100 * evaluation.stats[9:12]))
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["box_proposals"]["AR@1000"] == pytest.approx(metrics["AR@1000"])


def test_outputs_without_proposals_are_refused(tmp_path):
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(GROUND_TRUTH))
    evaluator = ProposalEvaluator("hand", distributed=False, json_file=str(json_file))
    with pytest.raises(KeyError, match="return_proposals"):
        evaluator.process([{"image_id": 1}], [{"boxes": torch.zeros(0, 4)}])
