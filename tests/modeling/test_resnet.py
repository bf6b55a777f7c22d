"""The ResNet family against torchvision's models, the paper's counts and hand computations."""
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from resdet import build_model
from resdet.config import setup_cfg
from resdet.modeling import build_backbone
from resdet.modeling.backbone.resnet import ZeroPadShortcut

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def config(name: str, *overrides):
    return setup_cfg(str(CONFIGS / name), list(overrides))


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_param_count_equals_torchvision(depth):
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert num_params(build_model(config(f"r{depth}_imagenet.yaml"))) == num_params(reference)


@pytest.mark.parametrize("depth,expected", [(18, 11_515_688), (34, 21_623_848)])
def test_plain_param_count(depth, expected):
    # the residual nets less their three projection shortcuts (conv + BN), counted by hand
    assert num_params(build_model(config(f"plain{depth}_imagenet.yaml"))) == expected


@pytest.mark.parametrize("name,paper_params", [
    ("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6), ("resnet56", 0.85e6),
    ("resnet110", 1.7e6), ("resnet1202", 19.4e6)])
def test_cifar_param_count_matches_paper(name, paper_params):
    params = num_params(build_model(config(f"cifar/{name}.yaml")))
    assert abs(params - paper_params) / paper_params < 0.04


def test_shortcut_a_is_parameter_free_and_zero_pads():
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert num_params(shortcut) == 0 and out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2]) and not out[:, 16:].any()
    model = build_model(config("cifar/resnet20.yaml"))
    assert not [name for name, _ in model.named_parameters() if "shortcut" in name]


def test_shortcut_c_projects_every_block():
    cfg_b, cfg_c = config("r18_imagenet.yaml"), config("r18_imagenet.yaml", "MODEL.RESNETS.SHORTCUT", "C")
    backbone_c = build_backbone(cfg_c)
    blocks = [block for stage in ("res2", "res3", "res4", "res5") for block in getattr(backbone_c, stage)]
    assert all(block.shortcut is not None for block in blocks)
    # option C adds a 1x1 conv + BN (2 params per channel) on the five identity shortcuts of ResNet-18
    extra = sum(c * c + 2 * c for c in (64, 64, 128, 256, 512))
    assert num_params(build_backbone(cfg_c)) - num_params(build_backbone(cfg_b)) == extra


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_stride_placement(stride_in_1x1):
    backbone = build_backbone(config("r50_imagenet.yaml", "MODEL.RESNETS.STRIDE_IN_1X1", str(stride_in_1x1)))
    for stage in ("res3", "res4", "res5"):
        first = getattr(backbone, stage)[0]
        assert first.conv1.stride == ((2, 2) if stride_in_1x1 else (1, 1))
        assert first.conv2.stride == ((1, 1) if stride_in_1x1 else (2, 2))
        assert first.shortcut.conv.stride == (2, 2)


def test_freeze_at_freezes_stem_and_res2():
    backbone = build_backbone(config("r18_imagenet.yaml", "MODEL.BACKBONE.FREEZE_AT", "2"))
    for name, param in backbone.named_parameters():
        assert param.requires_grad == (not name.startswith(("stem.", "res2."))), name
    assert isinstance(backbone.stem.norm1, FrozenBatchNorm2d) and isinstance(backbone.res2[1].norm2, FrozenBatchNorm2d)
    assert isinstance(backbone.res3[0].norm1, torch.nn.BatchNorm2d)
    before = backbone.stem.norm1.running_mean.clone()
    backbone.train()(torch.rand(2, 3, 64, 64) * 255)
    assert torch.equal(backbone.stem.norm1.running_mean, before)


@pytest.mark.parametrize("depth,channels", [(18, (64, 64, 128, 256, 512)), (50, (64, 256, 512, 1024, 2048))])
def test_out_features_shapes_and_strides(depth, channels):
    names = ["stem", "res2", "res3", "res4", "res5"]
    backbone = build_backbone(config(f"r{depth}_imagenet.yaml", "MODEL.RESNETS.OUT_FEATURES", str(names)))
    outputs = backbone(torch.randn(1, 3, 64, 96))
    shapes = backbone.output_shape()
    for name, ch, stride in zip(names, channels, (4, 4, 8, 16, 32)):
        assert (shapes[name].channels, shapes[name].stride) == (ch, stride)
        assert outputs[name].shape == (1, ch, 64 // stride, 96 // stride)


def test_out_features_stop_building_at_the_deepest_stage():
    backbone = build_backbone(config("r50_imagenet.yaml", "MODEL.RESNETS.OUT_FEATURES", "['res4']"))
    assert not hasattr(backbone, "res5") and list(backbone(torch.randn(1, 3, 64, 64))) == ["res4"]
