"""The CIFAR-10 networks of section 4.2: 3x3 stem, three stages of 2n 3x3 layers, option A shortcuts."""
from torch import nn

from ...errors import ConfigError
from ...layers.conv_norm import conv_norm
from .backbone import ShapeSpec
from .build import BACKBONE_REGISTRY
from .resnet import BasicBlock, ResNet, get_norm, init_weights, make_stage

CIFAR_STAGE_NAMES = ("res2", "res3", "res4")


class CifarStem(nn.Module):
    """The first layer: one 3x3 conv, norm, relu at full resolution."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = get_norm(norm, out_channels)
        self.out_channels = out_channels
        self.stride = 1

    def forward(self, x):
        return conv_norm(self.conv1, self.norm1, x, relu=True)


@BACKBONE_REGISTRY.register()
def build_cifar_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """6n+2 layers on maps of 32, 16, 8 with WIDTHS filters; RESIDUAL False gives the plain net."""
    r, c = cfg.MODEL.RESNETS, cfg.MODEL.CIFAR_RESNET
    if len(c.WIDTHS) != 3:
        raise ConfigError(f"MODEL.CIFAR_RESNET.WIDTHS: need three stage widths, got {list(c.WIDTHS)}")
    stem = CifarStem(input_shape.channels, c.WIDTHS[0], r.NORM)
    stages, in_channels = [], c.WIDTHS[0]
    for index, width in enumerate(c.WIDTHS):
        stages.append(make_stage(BasicBlock, c.N, in_channels, width, first_stride=1 if index == 0 else 2,
                                 norm=r.NORM, shortcut=r.SHORTCUT, residual=r.RESIDUAL))
        in_channels = width
    out_features = [f for f in r.OUT_FEATURES if f in ("stem",) + CIFAR_STAGE_NAMES] or ["res4"]
    model = ResNet(stem, stages, out_features)
    init_weights(model, r.ZERO_INIT_RESIDUAL)
    return model.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
