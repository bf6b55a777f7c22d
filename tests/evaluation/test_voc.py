"""VOC mAP against hand computations following the devkit's rules (VOCevaldet.m / voc_eval.py)."""
import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from resdet.evaluation.voc import VOCEvaluator, class_ap, devkit_iou, match_detections, to_devkit_boxes


def test_devkit_iou_counts_inclusive_pixels():
    # devkit boxes [1,1,10,10] (10x10 px) and [1,1,10,19] (10x19 px): IoU 100/190, while the
    # continuous IoU of the same numbers is 9*9 / (9*18) = 0.5
    iou = devkit_iou(np.array([1.0, 1, 10, 10]), np.array([[1.0, 1, 10, 19]]))
    assert iou[0] == pytest.approx(100 / 190)
    # the +1 convention is the continuous IoU of boxes grown by one pixel on the max corner
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, size=(20, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 30, size=(20, 2))], axis=1)
    grown = torch.as_tensor(boxes + [0, 0, 1, 1])
    expected = box_iou(grown[:1], grown)[0].numpy()
    np.testing.assert_allclose(devkit_iou(boxes[0], boxes), expected, rtol=1e-12)


def test_iou_of_exactly_half_is_not_a_match():
    # devkit [1,1,10,10] vs [1,1,10,20]: 100 / 200 px = 0.5 exactly -> false positive (needs > 0.5)
    ground_truth = {"img": (np.array([[1.0, 1, 10, 20]]), np.array([False]))}
    tp, fp = match_detections(["img"], np.array([0.9]), np.array([[1.0, 1, 10, 10]]), ground_truth)
    assert tp.tolist() == [False] and fp.tolist() == [True]
    # one pixel less of ground truth: 100 / 190 > 0.5 -> true positive
    ground_truth = {"img": (np.array([[1.0, 1, 10, 19]]), np.array([False]))}
    tp, fp = match_detections(["img"], np.array([0.9]), np.array([[1.0, 1, 10, 10]]), ground_truth)
    assert tp.tolist() == [True] and fp.tolist() == [False]


def test_07_and_area_ap_differ_by_hand():
    # three gts; detections by score: hit, miss, hit. npos = 3
    # recall    1/3, 1/3, 2/3 ; precision 1, 1/2, 2/3
    # area: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 after -> 1/3 + 2/9 = 5/9
    # 11-point: t = 0, .1, .2, .3 -> 1 ; t = .4, .5, .6 -> 2/3 ; t = .7 .. 1 -> 0 -> (4 + 2) / 11 = 6/11
    gts = np.array([[1.0, 1, 10, 10], [21, 21, 30, 30], [41, 41, 50, 50]])
    ground_truth = {7: (gts, np.zeros(3, dtype=bool))}
    detections = np.array([[1.0, 1, 10, 10], [100, 100, 110, 110], [21, 21, 30, 30]])
    ap_07, ap_12 = class_ap([7, 7, 7], np.array([0.9, 0.8, 0.7]), detections, ground_truth)
    assert ap_12 == pytest.approx(5 / 9)
    assert ap_07 == pytest.approx(6 / 11)


def test_difficult_ignored_and_duplicates_false_positive():
    # gts: A (normal), B (difficult), C (normal) -> npos = 2
    # detections by score: on B (ignored), on A (TP), on A again (duplicate, FP), on C (TP)
    # counted: tp 0,1,1,2 ; fp 0,0,1,1 ; recall 0, .5, .5, 1 ; precision 0, 1, .5, 2/3
    # area: .5 * 1 + .5 * 2/3 = 5/6 ; 11-point: 6 thresholds <= .5 give 1, 5 give 2/3 -> 28/33
    # (counting the difficult hit as FP would give .5 * .5 + .5 * .5 = 0.5)
    gts = np.array([[1.0, 1, 10, 10], [21, 21, 30, 30], [41, 41, 50, 50]])
    difficult = np.array([False, True, False])
    detections = np.array([[21.0, 21, 30, 30], [1, 1, 10, 10], [1, 1, 10, 11], [41, 41, 50, 50]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    tp, fp = match_detections(["a"] * 4, scores, detections, {"a": (gts, difficult)})
    assert tp.tolist() == [False, True, False, True]
    assert fp.tolist() == [False, False, True, False]
    ap_07, ap_12 = class_ap(["a"] * 4, scores, detections, {"a": (gts, difficult)})
    assert ap_12 == pytest.approx(5 / 6)
    assert ap_07 == pytest.approx(28 / 33)


def test_devkit_match_takes_the_best_overlap_even_if_taken():
    # as in the devkit, a detection is judged against the gt it overlaps most: when that gt is
    # already taken it is a duplicate (FP) even though another gt overlaps it by more than 0.5
    gts = np.array([[1.0, 1, 10, 10], [1, 1, 10, 12]])
    detections = np.array([[1.0, 1, 10, 10], [1, 1, 10, 10]])
    tp, fp = match_detections([0, 0], np.array([0.9, 0.8]), detections, {0: (gts, np.zeros(2, dtype=bool))})
    assert tp.tolist() == [True, False] and fp.tolist() == [False, True]


def _output(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def _toy_dataset():
    """Two images, classes cat/dog; 0-based continuous boxes as the loader gives them."""
    return [
        {"image_id": "000001", "height": 60, "width": 60, "annotations": [
            {"bbox": [0.0, 0.0, 10.0, 10.0], "category_id": 0, "difficult": False},
            {"bbox": [20.0, 20.0, 30.0, 30.0], "category_id": 0, "difficult": False},
            {"bbox": [40.0, 40.0, 50.0, 50.0], "category_id": 0, "difficult": False},
            {"bbox": [0.0, 30.0, 15.0, 45.0], "category_id": 1, "difficult": True}]},
        {"image_id": "000002", "height": 60, "width": 60, "annotations": [
            {"bbox": [5.0, 5.0, 25.0, 25.0], "category_id": 1, "difficult": False}]},
    ]


def _toy_predictions():
    inputs = [{"image_id": "000001"}, {"image_id": "000002"}]
    outputs = [
        # cat: the hit / miss / hit case of test_07_and_area_ap_differ_by_hand; dog on the difficult gt
        _output([[0, 0, 10, 10], [99, 99, 110, 110], [20, 20, 30, 30], [0, 30, 15, 45]],
                [0.9, 0.8, 0.7, 0.95], [0, 0, 0, 1]),
        _output([[5, 5, 25, 25]], [0.5], [1]),
    ]
    return inputs, outputs


def test_evaluator_end_to_end(tmp_path):
    evaluator = VOCEvaluator("toy_voc", str(tmp_path), distributed=False,
                             dataset_dicts=_toy_dataset(), thing_classes=["cat", "dog"])
    inputs, outputs = _toy_predictions()
    evaluator.process(inputs[:1], outputs[:1])
    evaluator.process(inputs[1:], outputs[1:])
    results = evaluator.evaluate()["voc"]
    # cat as in the hand case (6/11, 5/9); dog: the difficult hit is ignored, the other hit is TP -> 1
    assert results["per_class_07"]["cat"] == pytest.approx(600 / 11)
    assert results["per_class_12"]["cat"] == pytest.approx(500 / 9)
    assert results["per_class_07"]["dog"] == pytest.approx(100.0)
    assert results["AP50_07"] == pytest.approx((600 / 11 + 100) / 2)
    assert results["AP50_12"] == pytest.approx((500 / 9 + 100) / 2)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["voc"]["AP50_07"] == pytest.approx(results["AP50_07"])
    detections = json.loads((tmp_path / "eval" / "voc_detections.json").read_text())
    assert len(detections) == 5
    # devkit boxes: min corner + 1, max corner unchanged
    assert detections[0] == {"image": "000001", "class": "cat", "box": [1.0, 1.0, 10.0, 10.0],
                             "score": pytest.approx(0.9)}


def test_to_devkit_boxes():
    np.testing.assert_array_equal(to_devkit_boxes([[0.0, 4.0, 10.0, 20.0]]), [[1.0, 5.0, 10.0, 20.0]])
    assert to_devkit_boxes([]).shape == (0, 4)


def test_class_without_ground_truth_is_nan_and_left_out(tmp_path):
    evaluator = VOCEvaluator("toy_voc", str(tmp_path), distributed=False,
                             dataset_dicts=_toy_dataset()[:1], thing_classes=["cat", "dog", "bird"])
    inputs, outputs = _toy_predictions()
    evaluator.process(inputs[:1], outputs[:1])
    results = evaluator.evaluate()["voc"]
    assert np.isnan(results["per_class_07"]["bird"])
    # dog has only a difficult gt in image 1 -> also NaN; the mean is cat's alone
    assert np.isnan(results["per_class_07"]["dog"])
    assert results["AP50_07"] == pytest.approx(600 / 11)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["voc"]["per_class_07"]["bird"] is None


def _write_devkit_tree(root, objects):
    """A one-image VOC tree: Annotations/000001.xml with `objects` (name, xmin, ymin, xmax, ymax, difficult)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (root / "labels.txt").write_text("cat\ndog\n")
    xml_objects = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2, difficult in objects)
    (root / "Annotations" / "000001.xml").write_text(
        f"<annotation><size><width>100</width><height>80</height><depth>3</depth></size>{xml_objects}</annotation>")


def test_catalogued_voc_round_trips_devkit_boxes(tmp_path):
    from resdet.data import DatasetCatalog

    objects = [("cat", 12, 7, 40, 33, 0), ("dog", 50, 20, 91, 70, 0), ("dog", 1, 1, 10, 10, 1)]
    _write_devkit_tree(tmp_path / "VOCtoy", objects)
    name = f"voc:{tmp_path / 'VOCtoy'}:test"
    # the detector returns exactly the loaded ground truth (0-based continuous boxes)
    record = DatasetCatalog.get(name)[0]
    annotations = record["annotations"]
    output = _output([a["bbox"] for a in annotations], [0.9, 0.8, 0.7], [a["category_id"] for a in annotations])
    evaluator = VOCEvaluator(name, str(tmp_path / "out"), distributed=False)
    evaluator.process([{"image_id": record["image_id"]}], [output])
    results = evaluator.evaluate()["voc"]
    assert results["per_class_07"] == {"cat": pytest.approx(100.0), "dog": pytest.approx(100.0)}
    detections = json.loads((tmp_path / "out" / "eval" / "voc_detections.json").read_text())
    # written boxes are the xml's integers again
    assert [d["box"] for d in detections] == [[float(v) for v in obj[1:5]] for obj in objects]
    assert [d["class"] for d in detections] == ["cat", "dog", "dog"]
