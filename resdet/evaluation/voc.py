"""PASCAL VOC mAP at IoU 0.5, as the official devkit computes it (VOC2007 11-point and VOC2010+ area AP).

Boxes are compared in the devkit's convention: 1-based inclusive pixel coordinates, where a box spans
x2 - x1 + 1 pixels. Dataset dicts and model outputs use 0-based continuous coordinates; the two differ
by one on the min corner only (devkit x1 = x1 + 1, devkit x2 = x2), the inverse of the VOC loader.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..engine import comm
from .evaluator import DatasetEvaluator, gather_on_main, per_class_table, save_results, write_json

logger = logging.getLogger(__name__)

IOU_THRESHOLD = 0.5
DETECTIONS_FILE = "voc_detections.json"


def to_devkit_boxes(boxes: np.ndarray) -> np.ndarray:
    """0-based continuous x1y1x2y2 (N, 4) to the devkit's 1-based inclusive pixels (N, 4)."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + np.array([1.0, 1.0, 0.0, 0.0])


def devkit_iou(box: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU (G,) of one devkit box (4,) with devkit boxes (G, 4), areas counting inclusive pixels."""
    inter_w = np.maximum(np.minimum(box[2], gt_boxes[:, 2]) - np.maximum(box[0], gt_boxes[:, 0]) + 1.0, 0.0)
    inter_h = np.maximum(np.minimum(box[3], gt_boxes[:, 3]) - np.maximum(box[1], gt_boxes[:, 1]) + 1.0, 0.0)
    intersection = inter_w * inter_h
    box_area = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    gt_areas = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1.0) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1.0)
    return intersection / (box_area + gt_areas - intersection)


def match_detections(image_ids: Sequence, scores: np.ndarray, boxes: np.ndarray,
                     ground_truth: Dict[object, Tuple[np.ndarray, np.ndarray]],
                     iou_threshold: float = IOU_THRESHOLD) -> Tuple[np.ndarray, np.ndarray]:
    """True and false positive flags (D,) of one class's detections, in descending score order.

    `ground_truth` maps an image id to (devkit boxes (G, 4), difficult (G,) bool). As in the devkit,
    a detection is matched to the ground truth box it overlaps most; it is a true positive if that IoU
    exceeds the threshold and the box is not yet taken, a false positive if the box is taken (a duplicate)
    or the IoU is too small, and neither if the box is difficult.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    true_positive = np.zeros(len(order), dtype=bool)
    false_positive = np.zeros(len(order), dtype=bool)
    taken = {image_id: np.zeros(len(gt_boxes), dtype=bool) for image_id, (gt_boxes, _) in ground_truth.items()}
    # greedy in score order: whether a box is still free depends on every higher-scoring detection
    for rank, index in enumerate(order):
        gt_boxes, difficult = ground_truth.get(image_ids[index], (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(gt_boxes) == 0:
            false_positive[rank] = True
            continue
        overlaps = devkit_iou(boxes[index], gt_boxes)
        best = int(overlaps.argmax())
        if overlaps[best] <= iou_threshold:
            false_positive[rank] = True
        elif not difficult[best]:
            if taken[image_ids[index]][best]:
                false_positive[rank] = True
            else:
                true_positive[rank] = True
                taken[image_ids[index]][best] = True
    return true_positive, false_positive


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall curve: VOC2007's 11-point mean, or the area under the interpolated curve."""
    if use_07_metric:
        thresholds = np.linspace(0.0, 1.0, 11)[:, None]  # (11, 1)
        # the best precision at recall >= t; 0 where no point of the curve reaches t
        return float(np.where(recall[None, :] >= thresholds, precision[None, :], 0.0).max(axis=1, initial=0.0).mean())
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # interpolated: max precision to the right
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def class_ap(image_ids: Sequence, scores: np.ndarray, boxes: np.ndarray,
             ground_truth: Dict[object, Tuple[np.ndarray, np.ndarray]]) -> Tuple[float, float]:
    """(2007 11-point AP, area AP) of one class, as fractions; NaN when it has no non-difficult box."""
    num_positives = sum(int((~difficult).sum()) for _, difficult in ground_truth.values())
    if num_positives == 0:
        return float("nan"), float("nan")
    true_positive, false_positive = match_detections(image_ids, scores, boxes, ground_truth)
    tp_cumulative = np.cumsum(true_positive)
    fp_cumulative = np.cumsum(false_positive)
    recall = tp_cumulative / num_positives
    precision = tp_cumulative / np.maximum(tp_cumulative + fp_cumulative, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric=True), voc_ap(recall, precision, use_07_metric=False)


def ground_truth_by_class(dataset_dicts: List[dict], image_ids: set, num_classes: int):
    """Per class, {image id: (devkit boxes (G, 4), difficult (G,))} over the images in `image_ids`."""
    per_class = [{} for _ in range(num_classes)]
    for record in dataset_dicts:
        if record["image_id"] not in image_ids:
            continue
        annotations = record.get("annotations", [])
        boxes = to_devkit_boxes([a["bbox"] for a in annotations])
        labels = np.array([a["category_id"] for a in annotations], dtype=np.int64)
        difficult = np.array([bool(a.get("difficult", False)) for a in annotations], dtype=bool)
        for label in np.unique(labels):
            mask = labels == label
            per_class[label][record["image_id"]] = (boxes[mask], difficult[mask])
    return per_class


class VOCEvaluator(DatasetEvaluator):
    """VOC mAP@0.5 (2007 11-point and 2010+ area) of a detection dataset with "difficult" flags.

    Ground truth is `DatasetCatalog.get(dataset_name)` and class names `MetadataCatalog.get(...).thing_classes`
    unless `dataset_dicts` / `thing_classes` are given. Only the processed images count, so a subset
    evaluates on its own ground truth. With `output_dir` (cfg.OUTPUT_DIR) it writes
    OUTPUT_DIR/eval/voc_detections.json (devkit boxes) and merges {"voc": ...} into results.json.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True,
                 dataset_dicts: Optional[List[dict]] = None, thing_classes: Optional[Sequence[str]] = None):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self._dataset_dicts = dataset_dicts
        if thing_classes is None:
            from ..data import MetadataCatalog

            thing_classes = MetadataCatalog.get(dataset_name).thing_classes
        self.thing_classes = list(thing_classes)
        self.reset()

    def reset(self) -> None:
        self._predictions: List[dict] = []  # one per image: {"image_id", "boxes" (devkit), "scores", "labels"}

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            boxes = to_devkit_boxes(out["boxes"].to("cpu", torch.float64).numpy())
            self._predictions.append({"image_id": inp["image_id"], "boxes": boxes,
                                      "scores": out["scores"].to("cpu", torch.float64).numpy(),
                                      "labels": out["labels"].to("cpu", torch.int64).numpy()})

    def dataset_dicts(self) -> List[dict]:
        """The ground-truth records, from the catalogue unless given to the constructor."""
        if self._dataset_dicts is None:
            from ..data import DatasetCatalog

            self._dataset_dicts = DatasetCatalog.get(self.dataset_name)
        return self._dataset_dicts

    def evaluate(self) -> Dict[str, Dict]:
        predictions = gather_on_main(self._predictions, self.distributed)
        if self.distributed and not comm.is_main_process():
            return {}
        image_ids = {prediction["image_id"] for prediction in predictions}
        dataset_dicts = self.dataset_dicts()
        if len(image_ids) != len(dataset_dicts):
            logger.warning("VOCEvaluator(%r): evaluating %d of the dataset's %d images",
                           self.dataset_name, len(image_ids), len(dataset_dicts))
        ground_truth = ground_truth_by_class(dataset_dicts, image_ids, len(self.thing_classes))
        det_images = np.repeat(np.array([p["image_id"] for p in predictions], dtype=object),
                               np.array([len(p["labels"]) for p in predictions], dtype=np.int64))
        det_boxes = np.concatenate([p["boxes"] for p in predictions] or [np.zeros((0, 4))])
        det_scores = np.concatenate([p["scores"] for p in predictions] or [np.zeros(0)])
        det_labels = np.concatenate([p["labels"] for p in predictions] or [np.zeros(0, dtype=np.int64)])
        if self.output_dir:
            self._write_detections(det_images, det_boxes, det_scores, det_labels)
        per_class_07, per_class_12 = {}, {}
        for label, name in enumerate(self.thing_classes):
            mask = det_labels == label
            ap_07, ap_12 = class_ap(det_images[mask], det_scores[mask], det_boxes[mask], ground_truth[label])
            per_class_07[name], per_class_12[name] = ap_07 * 100, ap_12 * 100
        missing = [name for name, ap in per_class_07.items() if np.isnan(ap)]
        if missing:
            logger.warning("VOCEvaluator(%r): no non-difficult ground truth for %s; left out of the mean",
                           self.dataset_name, ", ".join(missing))
        results = {"voc": {"AP50_07": _mean(per_class_07), "AP50_12": _mean(per_class_12),
                           "per_class_07": per_class_07, "per_class_12": per_class_12}}
        table = {name: {"AP50 (07)": per_class_07[name], "AP50 (area)": per_class_12[name],
                        "gt_boxes": sum(int((~difficult).sum()) for _, difficult in ground_truth[label].values())}
                 for label, name in enumerate(self.thing_classes)}
        logger.info("VOC mAP@0.5 of %r: %.2f (2007 11-point), %.2f (area); per class (non-difficult boxes):\n%s",
                    self.dataset_name, results["voc"]["AP50_07"], results["voc"]["AP50_12"], per_class_table(table))
        if self.output_dir:
            save_results(self.output_dir, results)
        return results

    def _write_detections(self, images: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                          labels: np.ndarray) -> None:
        records = [{"image": image, "class": self.thing_classes[label], "box": box, "score": score}
                   for image, label, box, score in zip(images.tolist(), labels.tolist(), boxes.tolist(),
                                                       scores.tolist())]
        write_json(os.path.join(self.output_dir, "eval", DETECTIONS_FILE), records)


def _mean(per_class: Dict[str, float]) -> float:
    values = [ap for ap in per_class.values() if not np.isnan(ap)]
    return float(np.mean(values)) if values else float("nan")
