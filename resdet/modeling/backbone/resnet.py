"""The ResNet family of the paper: basic and bottleneck blocks, plain networks, shortcut options A/B/C.

Parameter names follow one scheme that every converter maps to: `stem.conv1`, `stem.norm1`, then
`res{2..5}.{block}.conv{1..3}` / `norm{1..3}` and, where a block projects, `shortcut.conv` / `shortcut.norm`.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from fvcore.nn.weight_init import c2_msra_fill
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ...errors import ConfigError
from ...layers.conv_norm import conv_norm
from .backbone import Backbone, ShapeSpec
from .build import BACKBONE_REGISTRY

NORMS = ("BN", "FrozenBN", "SyncBN", "GN")
SHORTCUTS = ("A", "B", "C")
# blocks per stage res2..res5 (Table 1)
BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def get_norm(norm: str, channels: int) -> nn.Module:
    """A normalisation layer by config name."""
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if norm == "GN":
        return nn.GroupNorm(min(32, channels), channels)
    raise ConfigError(f"MODEL.RESNETS.NORM: unknown norm {norm!r}; choose one of {NORMS}")


class Projection(nn.Module):
    """Options B/C: 1x1 conv with stride, then a norm (eq. 2's W_s)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.norm = get_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_norm(self.conv, self.norm, x)


class ZeroPadShortcut(nn.Module):
    """Option A: identity subsampled by the stride, extra channels zero; no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[nn.Module]:
    """The shortcut of one block: None means identity."""
    if kind not in SHORTCUTS:
        raise ConfigError(f"MODEL.RESNETS.SHORTCUT: unknown option {kind!r}; choose one of {SHORTCUTS}")
    changes_shape = in_channels != out_channels or stride != 1
    if kind == "C" or (kind == "B" and changes_shape):
        return Projection(in_channels, out_channels, stride, norm)
    if kind == "A" and changes_shape:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return None


class ResidualBlock(nn.Module):
    """Shared forward of both block types: relu(branch(x) + shortcut(x)), or relu(branch(x)) when plain."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual

    def _add_shortcut(self, branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            shortcut = x if self.shortcut is None else self.shortcut(x)
            # in place into the fresh branch tensor, unless autocast left the two in different dtypes
            branch = branch.add_(shortcut) if branch.dtype == shortcut.dtype else branch + shortcut
        return F.relu_(branch)

    def last_norm(self) -> nn.Module:
        """The norm closing the residual branch (zero-initialised by ZERO_INIT_RESIDUAL)."""
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (ResNet-18/34)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN",
                 shortcut: str = "B", residual: bool = True, dilation: int = 1, **_unused):
        super().__init__(residual)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = get_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = get_norm(norm, out_channels)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = conv_norm(self.conv1, self.norm1, x, relu=True)
        return self._add_shortcut(conv_norm(self.conv2, self.norm2, out), x)

    def last_norm(self) -> nn.Module:
        return self.norm2


class BottleneckBlock(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152); the stride sits on the 1x1 or the 3x3."""

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int = 1,
                 norm: str = "BN", shortcut: str = "B", residual: bool = True, stride_in_1x1: bool = True,
                 num_groups: int = 1, dilation: int = 1):
        super().__init__(residual)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride_1x1, bias=False)
        self.norm1 = get_norm(norm, bottleneck_channels)
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, stride_3x3, padding=dilation,
                               dilation=dilation, groups=num_groups, bias=False)
        self.norm2 = get_norm(norm, bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = get_norm(norm, out_channels)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, norm) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = conv_norm(self.conv1, self.norm1, x, relu=True)
        out = conv_norm(self.conv2, self.norm2, out, relu=True)
        return self._add_shortcut(conv_norm(self.conv3, self.norm3, out), x)

    def last_norm(self) -> nn.Module:
        return self.norm3


class BasicStem(nn.Module):
    """conv1: 7x7/2 conv, norm, relu, 3x3/2 max pool (stride 4 in all)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
        self.norm1 = get_norm(norm, out_channels)
        self.out_channels = out_channels
        self.stride = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = conv_norm(self.conv1, self.norm1, x, relu=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def make_stage(block_class, num_blocks: int, in_channels: int, out_channels: int, first_stride: int,
               **block_kwargs) -> nn.Sequential:
    """`num_blocks` blocks; the first one changes channels and stride."""
    blocks = []
    for index in range(num_blocks):
        stride = first_stride if index == 0 else 1
        blocks.append(block_class(in_channels, out_channels, stride=stride, **block_kwargs))
        in_channels = out_channels
    return nn.Sequential(*blocks)


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop gradients and turn every BatchNorm into FrozenBatchNorm2d (statistics kept), in place."""
    for param in module.parameters():
        param.requires_grad_(False)
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_module(child)
    return module


def init_weights(module: nn.Module, zero_init_residual: bool) -> None:
    """He (MSRA) initialisation of convs; norms start as identity, optionally zero at branch ends."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            c2_msra_fill(m)
        elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, ResidualBlock) and m.residual:
                nn.init.zeros_(m.last_norm().weight)


class ResNet(Backbone):
    """Stem and stages res2..res5, built only as deep as the deepest requested output."""

    def __init__(self, stem: nn.Module, stages: List[nn.Sequential], out_features: List[str], freeze_at: int = 0):
        super().__init__()
        self.stem = stem
        self._out_features = list(out_features)
        self._out_feature_channels = {"stem": stem.out_channels}
        self._out_feature_strides = {"stem": stem.stride}
        self.stage_names = []
        stride = stem.stride
        for name, stage in zip(STAGE_NAMES, stages):
            self.add_module(name, stage)
            self.stage_names.append(name)
            stride *= _stage_stride(stage)
            self._out_feature_channels[name] = _stage_out_channels(stage)
            self._out_feature_strides[name] = stride
        for name in self._out_features:
            if name not in self._out_feature_channels:
                raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES: {name!r} is not one of stem, {', '.join(STAGE_NAMES)}")
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the stem (freeze_at >= 1) and res2..res{freeze_at} (>= 2)."""
        if freeze_at >= 1:
            freeze_module(self.stem)
        for index, name in enumerate(self.stage_names, start=2):
            if freeze_at >= index:
                freeze_module(getattr(self, name))
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def _stage_stride(stage: nn.Sequential) -> int:
    first = stage[0]
    return first.conv1.stride[0] * first.conv2.stride[0]


def _stage_out_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels


def resnet_stage_specs(cfg, in_channels: int, num_stages: int) -> List[dict]:
    """Keyword arguments of make_stage for res2..res{num_stages+1} from cfg.MODEL.RESNETS."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_DEPTH:
        raise ConfigError(f"MODEL.RESNETS.DEPTH: {r.DEPTH} is not one of {sorted(BLOCKS_PER_DEPTH)}")
    bottleneck = r.DEPTH >= 50
    width = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    out_channels = r.RES2_OUT_CHANNELS if bottleneck else width
    specs = []
    for index, num_blocks in enumerate(BLOCKS_PER_DEPTH[r.DEPTH][:num_stages]):
        is_res5 = index == 3
        dilation = r.RES5_DILATION if is_res5 else 1
        spec = dict(block_class=BottleneckBlock if bottleneck else BasicBlock, num_blocks=num_blocks,
                    in_channels=in_channels, out_channels=out_channels,
                    first_stride=1 if index == 0 or dilation > 1 else 2, norm=r.NORM, shortcut=r.SHORTCUT,
                    residual=r.RESIDUAL, dilation=dilation)
        if bottleneck:
            spec.update(bottleneck_channels=width, stride_in_1x1=r.STRIDE_IN_1X1, num_groups=r.NUM_GROUPS)
        specs.append(spec)
        in_channels, out_channels, width = out_channels, out_channels * 2, width * 2
    return specs


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """The ResNet of cfg.MODEL.RESNETS, up to the deepest stage in OUT_FEATURES."""
    r = cfg.MODEL.RESNETS
    out_features = list(r.OUT_FEATURES)
    unknown = [f for f in out_features if f not in ("stem",) + STAGE_NAMES]
    if unknown:
        raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES: unknown {unknown}; use stem, res2, res3, res4, res5")
    num_stages = max([STAGE_NAMES.index(f) + 1 for f in out_features if f != "stem"] or [0])
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, r.NORM)
    stages = [make_stage(**spec) for spec in resnet_stage_specs(cfg, r.STEM_OUT_CHANNELS, num_stages)]
    model = ResNet(stem, stages, out_features, freeze_at=0)
    init_weights(model, r.ZERO_INIT_RESIDUAL)
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
