"""Box coding: boxes to regression deltas (dx, dy, dw, dh) relative to reference boxes and back."""
import math
from typing import Sequence

import torch
import torch.nn.functional as F

# no box grows by more than 1000/16 of its reference in one step (exp overflow guard)
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode/decode x1y1x2y2 boxes against references with weights (wx, wy, ww, wh); widths are x2 - x1."""

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"BBOX_REG_WEIGHTS: need 4 weights (wx, wy, ww, wh), got {tuple(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """(..., 4) deltas that turn `references` into `targets` (both (..., 4), broadcast)."""
        wx, wy, ww, wh = self.weights
        ref_widths = references[..., 2] - references[..., 0]
        ref_heights = references[..., 3] - references[..., 1]
        ref_ctr_x = references[..., 0] + 0.5 * ref_widths
        ref_ctr_y = references[..., 1] + 0.5 * ref_heights
        gt_widths = targets[..., 2] - targets[..., 0]
        gt_heights = targets[..., 3] - targets[..., 1]
        gt_ctr_x = targets[..., 0] + 0.5 * gt_widths
        gt_ctr_y = targets[..., 1] + 0.5 * gt_heights
        dx = wx * (gt_ctr_x - ref_ctr_x) / ref_widths
        dy = wy * (gt_ctr_y - ref_ctr_y) / ref_heights
        dw = ww * torch.log(gt_widths / ref_widths)
        dh = wh * torch.log(gt_heights / ref_heights)
        return torch.stack([dx, dy, dw, dh], dim=-1)

    def decode(self, deltas: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """(..., 4) boxes from deltas (..., 4) applied to references (..., 4), broadcast."""
        wx, wy, ww, wh = self.weights
        references = references.to(deltas.dtype)
        widths = references[..., 2] - references[..., 0]
        heights = references[..., 3] - references[..., 1]
        ctr_x = references[..., 0] + 0.5 * widths
        ctr_y = references[..., 1] + 0.5 * heights
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        return torch.stack([pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h], dim=-1)


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str, beta: float) -> torch.Tensor:
    """Summed smooth-L1 (beta; 0 is L1) or L1 loss between predicted and target deltas."""
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
    if loss_type == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    raise ValueError(f"BBOX_REG_LOSS_TYPE: unknown {loss_type!r}; choose 'smooth_l1' or 'l1'")
