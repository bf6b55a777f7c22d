"""build_optimizer: weight decay per parameter kind, frozen parameters left out."""
import pytest
import torch
from torch import nn

import resdet
from resdet.config import setup_cfg
from resdet.layers.weight_cache import layer_weights
from resdet.solver import build_optimizer


def test_norm_decay_and_frozen_params(cfg):
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.NESTEROV = 1e-4, 0.0, True
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    optimizer = build_optimizer(cfg, model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert id(model[0].weight) not in decay
    assert decay[id(model[0].bias)] == 1e-4 and decay[id(model[2].weight)] == 1e-4
    assert decay[id(model[1].weight)] == 0.0 and decay[id(model[1].bias)] == 0.0
    assert len(decay) == 5
    group = optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["nesterov"] and group["lr"] == 0.1


def test_one_step_matches_hand_sgd(cfg):
    cfg.SOLVER.WEIGHT_DECAY = 0.5
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(2.0)
    optimizer = build_optimizer(cfg, model)
    (model(torch.ones(1, 1)) * 3).sum().backward()  # grad 3
    optimizer.step()
    # w - lr * (grad + wd * w) = 2 - 0.1 * (3 + 1)
    assert model.weight.item() == torch.tensor(1.6).item()
    assert not optimizer.defaults["fused"]  # torch's default loop: the rounding the README's CIFAR runs had


def test_adamw_first_step_by_hand(cfg):
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "AdamW", 0.01, 0.5
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(2.0)
    optimizer = build_optimizer(cfg, model)
    (model(torch.ones(1, 1)) * 3).sum().backward()  # grad 3
    optimizer.step()
    # first step: bias-corrected moments are g and g^2, so the step is lr * g / (|g| + eps); decay is decoupled
    expected = 2.0 - 0.01 * 0.5 * 2.0 - 0.01 * 3.0 / (3.0 + 1e-8)
    assert model.weight.item() == pytest.approx(expected, abs=1e-7)
    assert optimizer.defaults["fused"]  # torch's one-pass kernel on the CPU


def test_backbone_lr_factor_scales_the_trunk_only(cfg):
    det = setup_cfg("configs/toy_frcnn_r18_fpn.yaml", ["SOLVER.BACKBONE_LR_FACTOR", 0.25, "SOLVER.BASE_LR", 0.001])
    model = resdet.build_model(det)
    optimizer = build_optimizer(det, model)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in lr_of, name
        elif name.startswith("backbone.bottom_up."):  # the ResNet trunk a classification checkpoint fills
            assert lr_of[id(param)] == pytest.approx(0.00025), name
        else:  # FPN, RPN and RoI heads
            assert lr_of[id(param)] == pytest.approx(0.001), name


def test_unknown_optimizer_is_named(cfg):
    cfg.SOLVER.OPTIMIZER = "Lion"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER.*Lion"):
        build_optimizer(cfg, nn.Linear(1, 1))


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
def test_a_step_renews_the_weights_derived_from_the_parameters(cfg, optimizer_name):
    # a fused kernel (AdamW's) updates parameters without bumping their version counters; the weight cache keys
    # on them
    cfg.SOLVER.OPTIMIZER = optimizer_name
    layer = nn.Linear(3, 2)
    optimizer = build_optimizer(cfg, layer)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = layer_weights(layer)[0].clone()  # the cached bf16 weight
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        after = layer_weights(layer)[0]
    assert not torch.equal(after, before)
    assert torch.equal(after, layer.weight.detach().bfloat16())
