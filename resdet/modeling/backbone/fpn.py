"""Feature Pyramid Network over a ResNet: `bottom_up` (the trunk) and `fpn` (torchvision's lateral and output
convs), giving p2..p5 from res2..res5 and p6 by stride-2 max pooling of p5."""
from collections import OrderedDict
from typing import Dict, Sequence

import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...errors import ConfigError
from .backbone import Backbone, ShapeSpec
from .build import BACKBONE_REGISTRY
from .resnet import STAGE_NAMES, build_resnet_backbone

TOP_BLOCKS = ("maxpool", "")


class FPN(Backbone):
    """Outputs `p{k}` for each input `res{k}` (stride of res{k}), plus `p{k+1}` from the top block."""

    def __init__(self, bottom_up: Backbone, in_features: Sequence[str], out_channels: int, top_block: str = "maxpool"):
        super().__init__()
        if top_block not in TOP_BLOCKS:
            raise ConfigError(f"MODEL.FPN.TOP_BLOCK: unknown {top_block!r}; choose one of {TOP_BLOCKS}")
        shapes = bottom_up.output_shape()
        unknown = [f for f in in_features if f not in STAGE_NAMES or f not in shapes]
        if unknown:
            raise ConfigError(f"MODEL.FPN.IN_FEATURES: {unknown} are not ResNet stages in "
                             f"MODEL.RESNETS.OUT_FEATURES {list(shapes)}")
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.fpn = FeaturePyramidNetwork([shapes[f].channels for f in in_features], out_channels,
                                         extra_blocks=LastLevelMaxPool() if top_block else None)
        levels = [int(f[len("res"):]) for f in in_features]
        strides = [shapes[f].stride for f in in_features]
        if top_block:
            levels.append(levels[-1] + 1)
            strides.append(strides[-1] * 2)
        self._out_features = [f"p{level}" for level in levels]
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._size_divisibility = shapes[in_features[-1]].stride

    @property
    def size_divisibility(self) -> int:
        """The stride of the coarsest input, so that every lateral sum has matching sizes."""
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(x)
        pyramid = self.fpn(OrderedDict((f, bottom_up[f]) for f in self.in_features))
        return dict(zip(self._out_features, pyramid.values()))


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet of cfg.MODEL.RESNETS (FrozenBN / FREEZE_AT as configured) with an FPN of cfg.MODEL.FPN."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    f = cfg.MODEL.FPN
    return FPN(bottom_up, f.IN_FEATURES, f.OUT_CHANNELS, f.TOP_BLOCK)

