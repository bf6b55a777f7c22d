"""Per-region box heads: fully connected layers over pooled features, and the class / box predictor."""
from typing import Tuple

import torch
import torch.nn.functional as F
from fvcore.nn.weight_init import c2_xavier_fill
from torch import nn

from .box_coder import box_regression_loss


class FCBoxHead(nn.Module):
    """Flatten the pooled (R, C, S, S) features, then num_fc ReLU layers `fc1`, `fc2`, ... of fc_dim."""

    def __init__(self, in_channels: int, resolution: int, num_fc: int, fc_dim: int):
        super().__init__()
        in_dim = in_channels * resolution * resolution
        self.num_fc = num_fc
        for index in range(num_fc):
            layer = nn.Linear(in_dim, fc_dim)
            c2_xavier_fill(layer)
            self.add_module(f"fc{index + 1}", layer)
            in_dim = fc_dim
        self.output_size = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for index in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{index + 1}")(x))
        return x


class FastRCNNPredictor(nn.Module):
    """`cls_score`: C+1 logits, background LAST; `bbox_pred`: 4 deltas per class in class order (no background
    row), or 4 shared deltas when class-agnostic."""

    def __init__(self, in_features: int, num_classes: int, cls_agnostic: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 if cls_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R, C+1) logits and (R, 4C) or (R, 4) deltas."""
        return self.cls_score(x), self.bbox_pred(x)


def fast_rcnn_losses(logits: torch.Tensor, deltas: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor,
                     loss_type: str, beta: float) -> dict:
    """Cross-entropy over sampled RoIs and box regression of the true class over positives, both divided by
    the number of sampled RoIs. classes (S,) in 0..C (C = background); targets (S, 4)."""
    num_classes = logits.shape[1] - 1
    normalizer = max(len(classes), 1)
    loss_cls = F.cross_entropy(logits, classes, reduction="sum") / normalizer
    positive = torch.nonzero(classes < num_classes).squeeze(1)
    per_class = deltas.view(len(deltas), deltas.shape[1] // 4, 4)  # (S, C or 1, 4)
    class_column = classes[positive] if per_class.shape[1] > 1 else torch.zeros_like(positive)
    loss_box = box_regression_loss(per_class[positive, class_column], targets[positive], loss_type, beta)
    return {"loss_cls": loss_cls, "loss_box_reg": loss_box / normalizer}
