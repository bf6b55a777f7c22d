"""The backbone interface every BACKBONE_REGISTRY entry implements."""
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (input pixels per feature cell) of one feature map."""

    channels: int
    stride: int = 1


class Backbone(nn.Module):
    """A module mapping (N,3,H,W) normalised images to named feature maps."""

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def size_divisibility(self) -> int:
        """Input sides must be multiples of this (0: any size)."""
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Channels and stride of each output feature."""
        return {
            name: ShapeSpec(self._out_feature_channels[name], self._out_feature_strides[name])
            for name in self._out_features
        }
