"""Matcher: each prediction (anchor or proposal) to its best ground-truth box, labelled by IoU thresholds."""
from typing import Sequence, Tuple

import torch


class Matcher:
    """Thresholds [t1..tn] split the best IoU into n+1 intervals [-inf,t1), [t1,t2), ..., [tn,inf) with labels
    (-1 ignore, 0 negative, 1 positive); e.g. [0.3, 0.7] with [0, -1, 1] is the RPN's rule.

    The quality matrix is (..., G, P): any leading batch dims, G ground truths, P predictions. Entries < 0
    mark ground truths that do not exist for that prediction (padding, or another image's box).
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if thresholds != sorted(thresholds):
            raise ValueError(f"IOU_THRESHOLDS: must be increasing, got {thresholds}")
        if len(labels) != len(thresholds) + 1 or any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(f"IOU_LABELS: need {len(thresholds) + 1} labels from (-1, 0, 1) for thresholds "
                             f"{thresholds}, got {list(labels)}")
        self.thresholds = torch.tensor(thresholds, dtype=torch.float32)
        self.labels = torch.tensor(list(labels), dtype=torch.int8)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(..., P) index of the best ground truth and (..., P) int8 label of each prediction."""
        *batch, num_gt, num_pred = quality.shape
        device = quality.device
        if num_gt == 0:
            matches = torch.zeros((*batch, num_pred), dtype=torch.int64, device=device)
            return matches, torch.full_like(matches, int(self.labels[0]), dtype=torch.int8)
        best_quality, matches = quality.max(dim=-2)  # (..., P)
        interval = torch.bucketize(best_quality, self.thresholds.to(device, quality.dtype), right=True)
        match_labels = self.labels.to(device)[interval]
        if self.allow_low_quality_matches:
            match_labels[self._best_for_some_gt(quality)] = 1
        return matches, match_labels

    @staticmethod
    def _best_for_some_gt(quality: torch.Tensor) -> torch.Tensor:
        """(..., P) bool: the prediction ties for the highest IoU of some ground truth (IoU > 0).

        Such a prediction keeps its own best match (as in Faster R-CNN); a ground truth that overlaps
        nothing adds no positive (rather than making every non-overlapping prediction positive).
        """
        highest = quality.max(dim=-1, keepdim=True).values  # (..., G, 1)
        return ((quality == highest) & (highest > 0)).any(dim=-2)
