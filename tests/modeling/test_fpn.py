"""resdet's FPN forward against torchvision's FeaturePyramidNetwork.forward on the same modules and inputs."""
from collections import OrderedDict

import pytest
import torch

from resdet.modeling.backbone.backbone import ShapeSpec
from resdet.modeling.backbone.fpn import add_upsampled, build_resnet_fpn_backbone


def _fpn(cfg):
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.BACKBONE.FREEZE_AT = 5  # the trunk frozen: the gradients compared are the FPN's own
    torch.manual_seed(0)
    model = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    for param in model.fpn.parameters():  # torchvision's init leaves the biases zero
        torch.nn.init.normal_(param, std=0.1)
    return model


def _reference(model, x):
    features = model.bottom_up(x)
    pyramid = model.fpn(OrderedDict((f, features[f]) for f in model.in_features))
    return list(pyramid.values())


@pytest.mark.parametrize("channels_last", [False, True])
def test_fpn_equals_torchvisions_forward_and_gradients(cfg, channels_last):
    model = _fpn(cfg)
    x = torch.randn(2, 3, 64, 96)
    if channels_last:
        model.eval()
        x = x.contiguous(memory_format=torch.channels_last)
    ours = list(model(x).values())
    reference = _reference(model, x)
    assert list(model(x)) == ["p2", "p3", "p4", "p5", "p6"] and len(ours) == len(reference) == 5
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == len(list(model.fpn.parameters())) > 0
    weights = [torch.randn_like(t) for t in ours]
    ours_grads = torch.autograd.grad(sum((t * w).sum() for t, w in zip(ours, weights)), params)
    reference_grads = torch.autograd.grad(sum((t * w).sum() for t, w in zip(reference, weights)), params)
    for got, want in zip(ours_grads, reference_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_add_upsampled_equals_nearest_interpolation_on_any_size():
    generator = torch.Generator().manual_seed(1)
    for lateral_size, coarse_size in (((8, 12), (4, 6)), ((9, 12), (5, 6)), ((8, 8), (8, 8))):
        lateral = torch.randn(2, 3, *lateral_size, generator=generator)
        coarse = torch.randn(2, 3, *coarse_size, generator=generator)
        expected = lateral + torch.nn.functional.interpolate(coarse, size=lateral_size, mode="nearest")
        torch.testing.assert_close(add_upsampled(lateral.clone(), coarse), expected, rtol=0, atol=0)
        last = lateral.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(add_upsampled(last, coarse), expected, rtol=0, atol=0)


def test_hooks_on_torchvisions_modules_still_fire(cfg):
    model = _fpn(cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    expected = list(model(x).values())
    seen = []
    handles = [model.fpn.register_forward_hook(lambda m, i, o: seen.append("fpn")),
               model.fpn.inner_blocks[0].register_forward_hook(lambda m, i, o: seen.append("inner0"))]
    torch.testing.assert_close(list(model(x).values()), expected, atol=1e-5, rtol=1e-5)
    handles.pop(0).remove()
    model(x)
    handles.pop().remove()
    assert seen == ["inner0", "fpn", "inner0"]
