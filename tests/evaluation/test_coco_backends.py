"""TEST.COCO_EVAL_BACKEND: faster-coco-eval gives pycocotools' box AP, on the toy val set and on a synthetic set with
crowd regions, all area ranges, images without detections and detections on images without objects."""
import importlib.util
import json
import math
import os
import runpy
import sys

import numpy as np
import pytest
import torch

from resdet.config import get_cfg, setup_cfg
from resdet.data import make_toy_data
from resdet.errors import ConfigError
from resdet.evaluation.coco import METRIC_NAMES, COCOEvaluator, per_category_ap
from resdet.evaluation.coco_backends import COCO_EVAL_BACKENDS, coco_eval_backend

needs_faster_coco_eval = pytest.mark.skipif(importlib.util.find_spec("faster_coco_eval") is None,
                                            reason="pip install 'faster-coco-eval>=1.6.8' (in resdet[dev])")

TOLERANCE = 1e-4  # in AP points (%)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_DET = os.path.join(REPO, "configs", "toy_frcnn_r18_fpn.yaml")


def _detections_from_ground_truth(dataset: dict, seed: int, miss: float = 0.15, wrong_class: float = 0.1,
                                  false_positives: int = 3) -> list:
    """COCO results made from the objects: some missed, the rest jittered (some given another class), plus up to
    `false_positives` random boxes per image; crowd regions get detections inside them too."""
    rng = np.random.default_rng(seed)
    category_ids = sorted(category["id"] for category in dataset["categories"])
    results = []
    for annotation in dataset["annotations"]:
        if rng.uniform() < miss:
            continue
        x, y, w, h = annotation["bbox"]
        if annotation["iscrowd"]:  # a detection on a member of the crowd: ignored, not a false positive
            x, y, w, h = x + w * 0.25, y + h * 0.25, w * 0.3, h * 0.3
        dx, dy, dw, dh = rng.normal(0, 0.1, 4) * [w, h, w, h]
        category = annotation["category_id"] if rng.uniform() > wrong_class else int(rng.choice(category_ids))
        results.append({"image_id": annotation["image_id"], "category_id": category, "score": float(rng.uniform()),
                        "bbox": [x + dx, y + dy, max(w + dw, 1.0), max(h + dh, 1.0)]})
    for image in dataset["images"]:
        for _ in range(rng.integers(0, false_positives + 1)):
            w, h = rng.uniform(4, image["width"] / 2, 2)
            x, y = rng.uniform(0, [image["width"] - w, image["height"] - h])
            results.append({"image_id": image["id"], "category_id": int(rng.choice(category_ids)),
                            "score": float(rng.uniform(0, 0.7)), "bbox": [x, y, w, h]})
    return results


def _evaluate(backend: str, json_file: str, dataset: dict, results: list) -> dict:
    """COCOEvaluator with `backend` fed `results` as a detector's outputs (xyxy, contiguous labels) per image."""
    evaluator = COCOEvaluator("backend_test", distributed=False, json_file=json_file, backend=backend)
    category_ids = sorted(category["id"] for category in dataset["categories"])
    for image in dataset["images"]:
        mine = [r for r in results if r["image_id"] == image["id"]]
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float64).reshape(-1, 4)
        output = {"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                  "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
                  "labels": torch.tensor([category_ids.index(r["category_id"]) for r in mine], dtype=torch.int64)}
        evaluator.process([{"image_id": image["id"]}], [output])
    return evaluator.evaluate()


def _assert_equal_metrics(reference: dict, other: dict) -> None:
    assert set(reference) == set(other) == {"bbox"} and set(reference["bbox"]) == set(other["bbox"])
    assert list(reference["bbox"])[:len(METRIC_NAMES)] == list(METRIC_NAMES)
    for name in reference["bbox"]:  # the six COCO metrics, then AP-<class> of each category
        expected, actual = reference["bbox"][name], other["bbox"][name]
        if math.isnan(expected):  # no ground truth in that area range, for both
            assert math.isnan(actual), name
        else:
            assert actual == pytest.approx(expected, abs=TOLERANCE), name


def _synthetic_dataset(seed: int) -> dict:
    """60 images of 3 sizes, 12 categories (ids with gaps), small/medium/large boxes, big crowd regions; images
    41-50 have no objects."""
    rng = np.random.default_rng(seed)
    category_ids = list(range(3, 3 + 3 * 12, 3))
    images, annotations = [], []
    for image_id in range(1, 61):
        height, width = [(120, 160), (480, 640), (800, 600)][image_id % 3]
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": height, "width": width})
        count = 0 if 41 <= image_id <= 50 else int(rng.integers(1, 12))
        for index in range(count):
            crowd = index == 0 and image_id % 7 == 0
            side = float(np.exp(rng.uniform(np.log(6), np.log(min(height, width) * (0.9 if crowd else 0.6)))))
            w, h = side * rng.uniform(0.6, 1.4), side * rng.uniform(0.6, 1.4)
            w, h = min(w, width - 1.0), min(h, height - 1.0)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": int(crowd),
                                "category_id": int(rng.choice(category_ids)), "bbox": [x, y, w, h],
                                # a mask area, not the box's: both backends must use the annotation's own
                                "area": w * h * float(rng.uniform(0.5, 1.0))})
    categories = [{"id": i, "name": f"class{i}"} for i in category_ids]
    return {"images": images, "annotations": annotations, "categories": categories}


@needs_faster_coco_eval
def test_toy_val_set_gives_equal_ap(tmp_path):
    make_toy_data(str(tmp_path), seed=0, cls_per_class={"train": 1, "val": 1}, det_images={"train": 1, "val": 48})
    json_file = str(tmp_path / "coco" / "annotations" / "instances_val.json")
    with open(json_file) as f:
        dataset = json.load(f)
    assert any(annotation["iscrowd"] for annotation in dataset["annotations"])
    results = _detections_from_ground_truth(dataset, seed=1)
    metrics = {backend: _evaluate(backend, json_file, dataset, results) for backend in COCO_EVAL_BACKENDS}
    assert 10 < metrics["pycocotools"]["bbox"]["AP"] < 90
    _assert_equal_metrics(metrics["pycocotools"], metrics["faster_coco_eval"])


@needs_faster_coco_eval
def test_synthetic_set_with_crowds_and_empty_images_gives_equal_ap(tmp_path):
    dataset = _synthetic_dataset(seed=2)
    results = _detections_from_ground_truth(dataset, seed=3, false_positives=6)
    results = [r for r in results if not 31 <= r["image_id"] <= 35]  # images without detections
    # more than COCOeval's 100 detections on one image, and tied scores, where only the ranking rule decides
    image = dataset["images"][4]
    results += [{"image_id": image["id"], "category_id": dataset["categories"][i % 12]["id"], "score": 0.5,
                 "bbox": [float(i % 40) * 3, float(i // 40) * 30, 20.0, 25.0]} for i in range(150)]
    assert any(r["image_id"] in range(41, 51) for r in results)  # detections on images without objects
    json_file = str(tmp_path / "synthetic.json")
    with open(json_file, "w") as f:
        json.dump(dataset, f)
    metrics = {backend: _evaluate(backend, json_file, dataset, results) for backend in COCO_EVAL_BACKENDS}
    reference = metrics["pycocotools"]["bbox"]
    assert all(5 < reference[name] < 95 for name in METRIC_NAMES), reference  # every area range has objects
    _assert_equal_metrics(metrics["pycocotools"], metrics["faster_coco_eval"])


@needs_faster_coco_eval
def test_per_category_ap_and_summary_agree():
    """The precision array that the per-category table reads has the same layout in both backends."""
    dataset = _synthetic_dataset(seed=4)
    results = _detections_from_ground_truth(dataset, seed=5)
    image_ids = [image["id"] for image in dataset["images"]]
    per_category, summaries = {}, {}
    for name in COCO_EVAL_BACKENDS:
        backend = coco_eval_backend(name)
        coco_eval, summaries[name] = backend.evaluate_boxes(
            backend.load_ground_truth(json.loads(json.dumps(dataset))), [dict(r) for r in results], image_ids)
        per_category[name] = per_category_ap(coco_eval)
    # the AP and AR lines that COCOEvaluator logs: the same text (faster-coco-eval adds AR50 and AR75 after them)
    assert len(summaries["pycocotools"]) == 12
    assert summaries["faster_coco_eval"][:12] == summaries["pycocotools"]
    assert list(per_category["pycocotools"]) == list(per_category["faster_coco_eval"])
    np.testing.assert_allclose(list(per_category["faster_coco_eval"].values()),
                               list(per_category["pycocotools"].values()), atol=TOLERANCE)


def test_per_class_ap_ap50_and_box_counts_equal_pycocotools_per_category(tmp_path, caplog):
    """bbox/AP-<class> and the logged table's AP, AP50 and box count, against COCOeval restricted to each category
    and the json's annotations counted directly."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = _synthetic_dataset(seed=6)
    results = _detections_from_ground_truth(dataset, seed=7)
    json_file = str(tmp_path / "synthetic.json")
    with open(json_file, "w") as f:
        json.dump(dataset, f)
    with caplog.at_level("INFO", logger="resdet.evaluation.coco"):
        metrics = _evaluate("pycocotools", json_file, dataset, results)["bbox"]
    table = next(record.getMessage() for record in caplog.records if "Per-category" in record.getMessage())
    rows = {cells[0]: cells[1:] for line in table.splitlines()[3:]
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}
    gt = COCO(json_file)
    for category in dataset["categories"]:
        evaluation = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "bbox")
        evaluation.params.catIds = [category["id"]]
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
        assert metrics[f"AP-{category['name']}"] == pytest.approx(100 * evaluation.stats[0], abs=TOLERANCE)
        boxes = sum(1 for a in dataset["annotations"] if a["category_id"] == category["id"] and not a["iscrowd"])
        expected = [f"{100 * evaluation.stats[0]:.2f}", f"{100 * evaluation.stats[1]:.2f}", str(boxes)]
        assert rows[category["name"]] == expected, table


def test_unknown_backend_names_the_key(tmp_path):
    cfg = get_cfg()
    assert cfg.TEST.COCO_EVAL_BACKEND == "pycocotools"
    with pytest.raises(ConfigError, match=r"TEST.COCO_EVAL_BACKEND is 'fast'.*'pycocotools', 'faster_coco_eval'"):
        COCOEvaluator("x", json_file=str(tmp_path / "missing.json"), backend="fast")


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'faster-coco-eval>=1.6.8'"):
        coco_eval_backend("faster_coco_eval")


@needs_faster_coco_eval
def test_train_det_uses_the_configured_backend_and_checks_it_before_training(tmp_path, monkeypatch):
    make_toy_data(str(tmp_path / "toy"), seed=0, cls_per_class={"train": 1, "val": 1},
                  det_images={"train": 2, "val": 2})
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    train_det = runpy.run_path(os.path.join(REPO, "tools", "train_det.py"))
    cfg = setup_cfg(TOY_DET, ["TEST.COCO_EVAL_BACKEND", "faster_coco_eval"])
    train_det["check_datasets"](cfg, False, TOY_DET)
    evaluator = train_det["build_evaluator"](cfg, cfg.DATASETS.TEST[0], str(tmp_path / "out"))
    assert evaluator.backend.name == "faster_coco_eval"
    with pytest.raises(ConfigError, match=r"TEST.COCO_EVAL_BACKEND \(set on the command line\) is 'fast'"):
        setup_cfg(TOY_DET, ["TEST.COCO_EVAL_BACKEND", "fast"])  # refused with the config, before any data is read
