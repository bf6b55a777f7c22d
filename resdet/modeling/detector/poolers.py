"""RoI pooling of a batch's boxes from one feature map (C4) or an FPN pyramid, with a batch-index column."""
import math
from typing import List, Sequence

import torch
from torch import nn
from torchvision.ops import box_area, roi_pool

from ...errors import ConfigError
from ...layers.roi_align import pool_by_level, roi_align, roi_align_levels

POOLER_TYPES = ("ROIAlignV2", "ROIAlign", "ROIPool")
# FPN paper eq. 1: a 224x224 box belongs to level 4; the epsilon guards exact powers of two against rounding
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-6


def assign_fpn_levels(boxes: torch.Tensor, min_level: int, max_level: int) -> torch.Tensor:
    """(R,) index into [min_level, max_level] of the level k = floor(4 + log2(sqrt(area) / 224)) of each box."""
    sizes = torch.sqrt(box_area(boxes))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_BOX_SIZE) + LEVEL_EPS)
    return levels.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


class ROIPooler(nn.Module):
    """Pool (R, C, S, S) features for boxes of a padded batch: ROIAlignV2 (aligned), ROIAlign or ROIPool."""

    def __init__(self, output_size: int, strides: Sequence[int], sampling_ratio: int = 0,
                 pooler_type: str = "ROIAlignV2"):
        super().__init__()
        if pooler_type not in POOLER_TYPES:
            raise ConfigError(f"MODEL.ROI_BOX_HEAD.POOLER_TYPE: unknown {pooler_type!r}; choose one of {POOLER_TYPES}")
        levels = [math.log2(s) for s in strides]
        if len(strides) > 1 and levels != list(range(int(levels[0]), int(levels[0]) + len(strides))):
            raise ValueError(f"ROIPooler: multi-level pooling needs strides 2^k, 2^(k+1), ..., got {list(strides)}")
        self.output_size = (output_size, output_size)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.sampling_ratio = sampling_ratio
        self.pooler_type = pooler_type

    def _pool(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        if self.pooler_type == "ROIPool":
            return roi_pool(feature, rois, self.output_size, scale)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio,
                         aligned=self.pooler_type == "ROIAlignV2")

    def forward(self, features: List[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """features per level (B, C, H_l, W_l); boxes (R, 4) in input pixels of image image_index (R,)."""
        rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)  # (R, 5)
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])
        levels = assign_fpn_levels(boxes, self.min_level, self.max_level)
        if self.pooler_type != "ROIPool":
            return roi_align_levels(features, rois, levels, self.output_size, self.scales, self.sampling_ratio,
                                    aligned=self.pooler_type == "ROIAlignV2")
        return pool_by_level(features, rois, levels, self.scales, self.output_size, self._pool)
