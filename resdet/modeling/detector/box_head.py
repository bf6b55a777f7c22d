"""Per-region box heads: fully connected layers over pooled features, and the class / box predictor."""
from typing import Tuple

import torch
import torch.nn.functional as F
from fvcore.nn.weight_init import c2_xavier_fill
from torch import nn

from ...layers import onednn_linear
from ...layers.weight_cache import cached_weights, linear, observed
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
        """(R, C, S, S) pooled features to (R, output_size)."""
        if self.num_fc and _is_channels_last(x) and not torch.is_grad_enabled() and not observed(self.fc1):
            # the pooler's inference output: flattened in its memory order (S, S, C), as it is, against fc1's
            # columns permuted once to that order (cached)
            x = self._first_fc_channels_last(x)
            first = 1
        else:
            x, first = x.flatten(1), 0
        for index in range(first, self.num_fc):
            x = linear(getattr(self, f"fc{index + 1}"), x, relu=True)
        return x

    def _first_fc_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        fc1 = self.fc1
        channels, height, width = x.shape[1:]

        def permuted():
            weight = fc1.weight.view(-1, channels, height, width).permute(0, 2, 3, 1).reshape(fc1.weight.shape)
            return weight, fc1.bias
        weight, bias = cached_weights(fc1, (fc1.weight, fc1.bias), permuted, kind="channels_last")
        return onednn_linear.linear(x.permute(0, 2, 3, 1).reshape(len(x), -1), weight, bias, relu=True)


def _is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d tensor laid out (N, H, W, C) in memory but not also (N, C, H, W) (as when H = W = 1)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


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
        return linear(self.cls_score, x), linear(self.bbox_pred, x)


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
