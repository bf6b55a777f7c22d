"""COCO box AP: detections to the COCO result format, COCOeval (pycocotools or faster-coco-eval), a category table."""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_convert

from ..engine import comm
from .coco_backends import coco_eval_backend
from .evaluator import DatasetEvaluator, gather_on_main, per_class_table, save_results, write_json

logger = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
RESULTS_FILE = "coco_instances_results.json"


class COCOEvaluator(DatasetEvaluator):
    """Box AP of a detection dataset whose ground truth is a COCO json.

    The json and the contiguous-label -> category-id mapping come from `MetadataCatalog.get(dataset_name)`
    unless `json_file` (and optionally `category_ids`, the category id of each contiguous label; default
    the json's category ids in ascending order) are given. With `output_dir` (cfg.OUTPUT_DIR) the
    detections go to OUTPUT_DIR/eval/coco_instances_results.json and the metrics into results.json. `backend`
    (cfg.TEST.COCO_EVAL_BACKEND) names the COCO API that computes AP: "pycocotools" or "faster_coco_eval".
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True,
                 json_file: Optional[str] = None, category_ids: Optional[Sequence[int]] = None,
                 backend: str = "pycocotools"):
        self.backend = coco_eval_backend(backend)  # first, so that a bad name fails before any inference
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self.json_file, category_ids = ground_truth_json("COCOEvaluator", dataset_name, json_file, category_ids)
        self._category_ids = None if category_ids is None else torch.as_tensor(list(category_ids))
        self._coco_gt = None
        self.reset()

    def reset(self) -> None:
        self._predictions: List[Tuple[Any, np.ndarray]] = []  # per image: (image_id, (N, 6) detections)

    @property
    def coco_gt(self) -> Any:
        """The ground truth as the backend's COCO object, loaded on first use (only the main process needs it)."""
        if self._coco_gt is None:
            self._coco_gt = self.backend.load_ground_truth(self.json_file)
        return self._coco_gt

    def category_ids(self) -> torch.Tensor:
        """Category id of each contiguous label, (C,); by default the json's ids in ascending order."""
        if self._category_ids is None:
            self._category_ids = torch.as_tensor(sorted(self.coco_gt.getCatIds()))
        return self._category_ids

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        category_ids = self.category_ids()
        for inp, out in zip(inputs, outputs):
            labels = out["labels"].to("cpu", torch.int64)
            if labels.numel() and int(labels.max()) >= len(category_ids):
                raise ValueError(f"COCOEvaluator({self.dataset_name!r}): label {int(labels.max())} but the "
                                 f"dataset has {len(category_ids)} categories")
            boxes = box_convert(out["boxes"].to("cpu", torch.float64), "xyxy", "xywh")  # (N, 4)
            # One (N, 6) float64 array per image, x y w h score category_id: 48 bytes a detection where a COCO
            # result dict takes about ten times that; the dicts are made once, on the main process, to score.
            scores = out["scores"].to("cpu", torch.float64)[:, None]
            columns = torch.cat([boxes, scores, category_ids[labels].double()[:, None]], dim=1)  # (N, 6)
            self._predictions.append((inp["image_id"], columns.numpy()))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        predictions = gather_on_main(self._predictions, self.distributed)
        if self.distributed and not comm.is_main_process():
            return {}
        detections = coco_results(predictions)
        if self.output_dir:
            write_json(os.path.join(self.output_dir, "eval", RESULTS_FILE), detections)
        image_ids = sorted({image_id for image_id, _ in predictions})
        del predictions
        if not detections:
            logger.warning("COCOEvaluator(%r): no detections on %d images; AP is 0", self.dataset_name, len(image_ids))
            metrics = {name: 0.0 for name in METRIC_NAMES}
        else:
            metrics = self._coco_box_ap(detections, image_ids)
        results = {"bbox": metrics}
        if self.output_dir:
            save_results(self.output_dir, results)
        return results

    def _coco_box_ap(self, detections: List[dict], image_ids: List) -> Dict[str, float]:
        """COCOeval "bbox" on the processed images; metrics in %, NaN where no ground truth qualifies, with the AP
        of each category as "AP-<name>"."""
        coco_eval, summary_lines = self.backend.evaluate_boxes(self.coco_gt, detections, image_ids)
        logger.info("COCO box evaluation (%s) of %r on %d images:\n%s", self.backend.name, self.dataset_name,
                    len(image_ids), "\n".join(summary_lines))
        # COCOeval writes -1 where an area range has no ground truth
        metrics = {name: float(stat * 100) if stat >= 0 else float("nan")
                   for name, stat in zip(METRIC_NAMES, coco_eval.stats)}
        per_category = per_category_metrics(coco_eval, image_ids)
        logger.info("Per-category box AP of %r:\n%s", self.dataset_name, per_class_table(per_category))
        metrics.update({f"AP-{name}": values["AP"] for name, values in per_category.items()})
        return metrics


def coco_results(predictions: List[Tuple[Any, np.ndarray]]) -> List[dict]:
    """COCO result dicts {"image_id", "category_id", "bbox" [x, y, w, h], "score"} of (image_id, (N, 6)) pairs."""
    return [{"image_id": image_id, "category_id": int(row[5]), "bbox": row[:4], "score": row[4]}
            for image_id, detections in predictions for row in detections.tolist()]


def per_category_metrics(coco_eval: Any, image_ids: Sequence) -> Dict[str, Dict[str, float]]:
    """{name: {"AP", "AP50", "gt_boxes"}} of each category of either backend's accumulated COCOeval: AP (IoU
    0.5:0.95) and AP50 in %, all areas, 100 detections, NaN without ground truth; gt_boxes counts the category's
    non-crowd boxes in `image_ids`."""
    precision = coco_eval.eval["precision"]  # (IoU thresholds, recall points, categories, areas, max dets)
    cat_ids = list(coco_eval.params.catIds)
    names = [category["name"] for category in coco_eval.cocoGt.loadCats(cat_ids)]
    iou_50 = int(np.argmin(np.abs(np.asarray(coco_eval.params.iouThrs) - 0.5)))
    metrics = {}
    for index, (name, cat_id) in enumerate(zip(names, cat_ids)):
        boxes = coco_eval.cocoGt.getAnnIds(imgIds=list(image_ids), catIds=[cat_id], iscrowd=False)
        metrics[name] = {"AP": _mean_percent(precision[:, :, index, 0, -1]),
                         "AP50": _mean_percent(precision[iou_50, :, index, 0, -1]), "gt_boxes": len(boxes)}
    return metrics


def _mean_percent(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(values.mean() * 100) if values.size else float("nan")


def per_category_ap(coco_eval: Any) -> Dict[str, float]:
    """AP in % of each category (IoU 0.5:0.95, all areas, 100 detections); NaN without ground truth."""
    precision = coco_eval.eval["precision"]
    names = [category["name"] for category in coco_eval.cocoGt.loadCats(coco_eval.params.catIds)]
    return {name: _mean_percent(precision[:, :, index, 0, -1]) for index, name in enumerate(names)}


def ground_truth_json(owner: str, dataset_name: str, json_file: Optional[str] = None,
                      category_ids: Optional[Sequence[int]] = None) -> Tuple[str, Optional[Sequence[int]]]:
    """`json_file` (default: the catalogued dataset's) and its contiguous -> category id mapping, checked to exist;
    FileNotFoundError names `owner` (the evaluator) and the dataset otherwise."""
    if json_file is None:
        json_file, category_ids = metadata_json_and_ids(dataset_name, category_ids)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{owner}({dataset_name!r}): annotation file not found: {json_file}")
    return json_file, category_ids


def metadata_json_and_ids(dataset_name: str, category_ids: Optional[Sequence[int]]):
    """The annotation json and the contiguous -> category id mapping of a catalogued dataset."""
    from ..data import MetadataCatalog

    metadata = MetadataCatalog.get(dataset_name)
    json_file = getattr(metadata, "json_file", None)
    if not json_file:
        raise KeyError(f"COCOEvaluator: dataset {dataset_name!r} has no json_file in its metadata; "
                       "pass json_file= to evaluate an arbitrary COCO json")
    if category_ids is None:
        id_map = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
        if id_map:
            category_ids = sorted(id_map, key=id_map.get)
    return json_file, category_ids
