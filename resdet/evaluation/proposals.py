"""Proposal recall (TEST.EVAL_PROPOSALS): the RPN's proposals scored as COCO average recall, class-less.

Every proposal is a detection of no particular class, and COCOeval matches them with `useCats=0`: a proposal may
recall any ground-truth box. AR@N is the recall of the best N proposals of each image, averaged over the IoU
thresholds 0.5:0.95 (as COCO's AR), for all boxes and by object size. Proposals are ranked as the RPN ranked them
(its objectness saturates to 1.0 in fp32, so the rank, not the value, orders them): the score given to COCOeval is
1 - rank / P.
"""
import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_convert

from ..engine import comm
from .coco import ground_truth_json
from .coco_backends import coco_eval_backend
from .evaluator import DatasetEvaluator, gather_on_main, save_results, write_json

logger = logging.getLogger(__name__)

PROPOSALS_FILE = "box_proposals.json"
MAX_DETS = (100, 1000)
AREAS = {"all": "", "small": "s", "medium": "m", "large": "l"}  # COCOeval's area labels -> AR, ARs, ARm, ARl


class ProposalEvaluator(DatasetEvaluator):
    """COCO AR@100 and AR@1000, all sizes and small / medium / large, of the "proposals" each output carries
    (FasterRCNN.return_proposals). The ground truth is a COCO json: the dataset's `json_file` metadata, or
    `json_file`. With `output_dir` the proposals go to OUTPUT_DIR/eval/box_proposals.json (COCO result format) and
    the metrics into results.json under "box_proposals"."""

    def __init__(self, dataset_name: str, output_dir: str = None, distributed: bool = True, json_file: str = None,
                 backend: str = "pycocotools", max_dets: Sequence[int] = MAX_DETS):
        self.backend = coco_eval_backend(backend)
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self.json_file, _ = ground_truth_json("ProposalEvaluator", dataset_name, json_file)
        self.max_dets = tuple(int(n) for n in max_dets)
        self.reset()

    def reset(self) -> None:
        self._proposals: List[Tuple[Any, np.ndarray]] = []  # per image: (image_id, (P, 5) x y w h score)

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "proposals" not in out:
                raise KeyError("ProposalEvaluator: the model's outputs carry no 'proposals'; set the FasterRCNN's "
                               "return_proposals (train_det.py does for TEST.EVAL_PROPOSALS True)")
            boxes = box_convert(out["proposals"].to("cpu", torch.float64), "xyxy", "xywh")  # (P, 4), RPN rank order
            count = len(boxes)
            scores = 1.0 - torch.arange(count, dtype=torch.float64) / max(count, 1)  # strictly decreasing with rank
            self._proposals.append((inp["image_id"], torch.cat([boxes, scores[:, None]], dim=1).numpy()))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        proposals = gather_on_main(self._proposals, self.distributed)
        if self.distributed and not comm.is_main_process():
            return {}
        coco_gt = self.backend.load_ground_truth(self.json_file)
        category = sorted(coco_gt.getCatIds())[0]  # any: with useCats=0 the category is not looked at
        detections = [{"image_id": image_id, "category_id": category, "bbox": row[:4], "score": row[4]}
                      for image_id, rows in proposals for row in rows.tolist()]
        if self.output_dir:
            write_json(os.path.join(self.output_dir, "eval", PROPOSALS_FILE), detections)
        image_ids = sorted({image_id for image_id, _ in proposals})
        if not detections:
            logger.warning("ProposalEvaluator(%r): no proposals on %d images; AR is 0", self.dataset_name,
                           len(image_ids))
            metrics = {name: 0.0 for name in metric_names(self.max_dets)}
        else:
            coco_eval = self.backend.evaluate_recall(coco_gt, detections, image_ids, self.max_dets)
            metrics = average_recalls(coco_eval.eval["recall"], coco_eval.params.areaRngLbl, self.max_dets)
        counts = [len(rows) for _, rows in proposals]
        logger.info("Proposal recall of %r on %d images (%.0f proposals per image): %s", self.dataset_name,
                    len(image_ids), np.mean(counts) if counts else 0,
                    ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        results = {"box_proposals": metrics}
        if self.output_dir:
            save_results(self.output_dir, results)
        return results


def metric_names(max_dets: Sequence[int]) -> List[str]:
    """AR@N, ARs@N, ARm@N, ARl@N for each N."""
    return [f"AR{suffix}@{n}" for n in max_dets for suffix in AREAS.values()]


def average_recalls(recall: np.ndarray, area_labels: Sequence[str], max_dets: Sequence[int]) -> Dict[str, float]:
    """{"AR@N", "ARs@N", ...} in % from COCOeval's recall array (IoU thresholds, 1, areas, max dets), averaged over
    the IoU thresholds where ground truth exists (NaN for a size without any)."""
    metrics = {}
    for m, n in enumerate(max_dets):
        for label, suffix in AREAS.items():
            values = recall[:, 0, list(area_labels).index(label), m]
            values = values[values > -1]
            metrics[f"AR{suffix}@{n}"] = float(values.mean() * 100) if values.size else float("nan")
    return metrics
