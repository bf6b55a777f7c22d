"""build_optimizer: weight decay per parameter kind, frozen parameters left out."""
import torch
from torch import nn

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
