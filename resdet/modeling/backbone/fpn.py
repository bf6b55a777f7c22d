"""Feature Pyramid Network over a ResNet: `bottom_up` (the trunk) and `fpn` (torchvision's lateral and output
convs), giving p2..p5 from res2..res5 and p6 by stride-2 max pooling of p5."""
from collections import OrderedDict
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...errors import ConfigError
from ...layers.weight_cache import conv2d, gradient_flows, observed
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
        if observed(self.fpn):  # a hook wants torchvision's module called
            pyramid = self.fpn(OrderedDict((f, bottom_up[f]) for f in self.in_features))
            return dict(zip(self._out_features, pyramid.values()))
        inputs = [bottom_up[f] for f in self.in_features]
        # torchvision's FeaturePyramidNetwork.forward, with the top-down sum done without the upsampled map
        inner, layer = self.fpn.inner_blocks, self.fpn.layer_blocks
        last_inner = _run_block(inner[-1], inputs[-1])
        results = [_run_block(layer[-1], last_inner)]
        for index in range(len(inputs) - 2, -1, -1):
            last_inner = add_upsampled(_run_block(inner[index], inputs[index]), last_inner)
            results.insert(0, _run_block(layer[index], last_inner))
        if self.fpn.extra_blocks is not None:  # LastLevelMaxPool: p6 subsamples p5
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return dict(zip(self._out_features, results))


def _run_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One of torchvision's FPN blocks, a Sequential holding one conv (no norm, no activation): that conv with its
    weights cast once under autocast (weight_cache.conv2d)."""
    if len(block) == 1 and type(block[0]) is nn.Conv2d and block[0].padding_mode == "zeros" and not observed(block):
        return conv2d(block[0], x)
    return block(x)


def add_upsampled(lateral: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """lateral (B, C, H, W) + coarse (B, C, h, w) upsampled to H x W (nearest). Where H, W = 2h, 2w (always, the
    padded input being a multiple of the coarsest stride) coarse is broadcast onto 2x2 blocks of lateral in place:
    no upsampled map is written and read back. Graph capture (export) keeps torchvision's interpolate and add, and
    so does training: autograd's backward of the in-place broadcast (a copy of the gradient, then a strided sum over
    the 2x2 blocks) takes 2 to 12 times the time of interpolate's and add's together."""
    if (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()  # before any
            or lateral.dtype != coarse.dtype  # size test, which a graph would record as a constraint on its inputs
            or gradient_flows((lateral, coarse))
            or tuple(lateral.shape[-2:]) != (2 * coarse.shape[-2], 2 * coarse.shape[-1])):
        return lateral + F.interpolate(coarse, size=lateral.shape[-2:], mode="nearest")
    height, width = coarse.shape[-2:]
    blocks = lateral.unflatten(3, (width, 2)).unflatten(2, (height, 2))  # (B, C, h, 2, w, 2), a view
    blocks.add_(coarse[:, :, :, None, :, None])
    return lateral


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet of cfg.MODEL.RESNETS (FrozenBN / FREEZE_AT as configured) with an FPN of cfg.MODEL.FPN."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    f = cfg.MODEL.FPN
    return FPN(bottom_up, f.IN_FEATURES, f.OUT_CHANNELS, f.TOP_BLOCK)

