"""build_optimizer and build_lr_scheduler from cfg.SOLVER."""
import logging
from typing import List

import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler, ParamScheduler
from torch import nn

from .lr_scheduler import LRMultiplier, WarmupParamScheduler

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> List[dict]:
    """Trainable parameters in two groups: normalisation layers (weight_decay_norm) and the rest."""
    norm_params, other_params, seen = [], [], set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (norm_params if isinstance(module, _NORM_TYPES) else other_params).append(param)
    groups = [{"params": other_params, "weight_decay": weight_decay},
              {"params": norm_params, "weight_decay": weight_decay_norm}]
    return [group for group in groups if group["params"]]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (optionally Nesterov); frozen parameters are left out."""
    groups = param_groups(model, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM)
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                           nesterov=cfg.SOLVER.NESTEROV)


def _steps_within(steps, max_iter: int) -> List[int]:
    kept = [step for step in steps if step < max_iter]
    if len(kept) < len(steps):
        logger.warning("SOLVER.STEPS %s: steps at or after SOLVER.MAX_ITER %d are ignored", list(steps), max_iter)
    if kept != sorted(set(kept)):
        raise ValueError(f"SOLVER.STEPS must be increasing, got {list(steps)}")
    return kept


def build_param_scheduler(cfg) -> ParamScheduler:
    """The lr multiplier as a function of training progress in [0, 1], warmup included."""
    name, max_iter = cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.MAX_ITER
    if name == "WarmupMultiStepLR":
        steps = _steps_within(cfg.SOLVER.STEPS, max_iter)
        values = [cfg.SOLVER.GAMMA ** k for k in range(len(steps) + 1)]
        scheduler = MultiStepParamScheduler(values, num_updates=max_iter, milestones=steps)
    elif name == "WarmupCosineLR":
        scheduler = CosineParamScheduler(1.0, 0.0)
    else:
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME: unknown {name!r}; choose one of {LR_SCHEDULERS}")
    if cfg.SOLVER.WARMUP_ITERS <= 0:
        return scheduler
    return WarmupParamScheduler(scheduler, cfg.SOLVER.WARMUP_FACTOR, min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0),
                                cfg.SOLVER.WARMUP_METHOD)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Per-iteration lr schedule: multi-step (gamma at SOLVER.STEPS) or cosine, with optional warmup."""
    return LRMultiplier(optimizer, build_param_scheduler(cfg), cfg.SOLVER.MAX_ITER)
