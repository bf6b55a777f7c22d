"""build_optimizer and build_lr_scheduler from cfg.SOLVER."""
import logging
import re
from typing import Dict, Iterable, List

import torch
from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler, ParamScheduler
from torch import nn

from ..errors import ConfigError
from .lr_scheduler import LRMultiplier, WarmupParamScheduler

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


OPTIMIZERS = ("SGD", "AdamW")
# The ResNet trunk's parameters, wherever a model keeps them: a classifier's backbone, an FPN detector's
# backbone.bottom_up, a C4 detector's backbone and per-region roi_heads.res5 (DEVELOPERS.md names).
_TRUNK_PARAMETER = re.compile(r"(^|\.)(stem|res[2-5])\.")


def is_trunk_parameter(name: str) -> bool:
    """True for a parameter of the ResNet trunk (stem, res2..res5), the part a backbone checkpoint fills."""
    return _TRUNK_PARAMETER.search(name) is not None


def param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float,
                 trunk_lr_factor: float = 1.0) -> List[dict]:
    """Trainable parameters grouped by weight decay (normalisation layers: weight_decay_norm) and by lr
    multiplier (`lr_factor`: trunk_lr_factor for the ResNet trunk, 1 elsewhere)."""
    groups: Dict[tuple, List[nn.Parameter]] = {}
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(prefix=module_name, recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = weight_decay_norm if isinstance(module, _NORM_TYPES) else weight_decay
            lr_factor = trunk_lr_factor if is_trunk_parameter(param_name) else 1.0
            groups.setdefault((decay, lr_factor), []).append(param)
    return [{"params": params, "weight_decay": decay, "lr_factor": lr_factor}
            for (decay, lr_factor), params in groups.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum (optionally Nesterov) or AdamW (SOLVER.OPTIMIZER); frozen parameters are left out."""
    solver = cfg.SOLVER
    if solver.BACKBONE_LR_FACTOR < 0:
        raise ConfigError(f"SOLVER.BACKBONE_LR_FACTOR: must be >= 0, got {solver.BACKBONE_LR_FACTOR}")
    groups = param_groups(model, solver.WEIGHT_DECAY, solver.WEIGHT_DECAY_NORM, solver.BACKBONE_LR_FACTOR)
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    for group in groups:
        group["lr"] = solver.BASE_LR * group["lr_factor"]
    # torch's fused AdamW updates every parameter in one pass: on the CPU, where torch's default is a Python loop
    # over the parameters, its step over the toy detector's 12M parameters takes 4 ms instead of 30 (the same update
    # to rounding). SGD keeps torch's default: fused, it gains 1 ms there and rounds differently (1e-7 after 20
    # CIFAR iterations), which would change the runs behind the README's figures
    fused = (solver.OPTIMIZER == "AdamW" and _fused_supported(group["params"] for group in groups)) or None
    if solver.OPTIMIZER == "SGD":
        optimizer = torch.optim.SGD(groups, lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV,
                                    fused=fused)
    elif solver.OPTIMIZER == "AdamW":
        optimizer = torch.optim.AdamW(groups, lr=solver.BASE_LR, betas=tuple(solver.BETAS), fused=fused)
    else:
        raise ConfigError(f"SOLVER.OPTIMIZER: unknown {solver.OPTIMIZER!r}; choose one of {OPTIMIZERS}")
    if fused:
        optimizer.register_step_post_hook(_mark_parameters_modified)
    return optimizer


def _mark_parameters_modified(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Bump every parameter's version counter after a fused step, which updates them in place without doing so:
    the weights derived from parameters (folded norms, packed or cast weights: resdet.layers.weight_cache) are
    recomputed when a version changes, and would otherwise stay those of the first evaluation."""
    torch.autograd.graph.increment_version([p for group in optimizer.param_groups for p in group["params"]])


def _fused_supported(param_lists: Iterable[List[nn.Parameter]]) -> bool:
    """Whether torch's fused optimizer kernels take these parameters: all floating point, on CPU or CUDA."""
    params = [param for params in param_lists for param in params]
    return all(param.is_floating_point() and param.device.type in ("cpu", "cuda") for param in params)


def _steps_within(steps, max_iter: int) -> List[int]:
    kept = [step for step in steps if step < max_iter]
    if len(kept) < len(steps):
        logger.warning("SOLVER.STEPS %s: steps at or after SOLVER.MAX_ITER %d are ignored", list(steps), max_iter)
    if kept != sorted(set(kept)):
        raise ConfigError(f"SOLVER.STEPS must be increasing, got {list(steps)}")
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
        if cfg.SOLVER.WARMUP_ITERS >= max_iter:
            # the warmup ramps towards the cosine's value where it ends, which past MAX_ITER is 0
            logger.warning("SOLVER.WARMUP_ITERS %d >= SOLVER.MAX_ITER %d under WarmupCosineLR: the warmup never ends "
                           "and the lr stays 0 for the whole run; shorten the warmup with the run",
                           cfg.SOLVER.WARMUP_ITERS, max_iter)
    else:
        raise ConfigError(f"SOLVER.LR_SCHEDULER_NAME: unknown {name!r}; choose one of {LR_SCHEDULERS}")
    if cfg.SOLVER.WARMUP_ITERS <= 0:
        return scheduler
    return WarmupParamScheduler(scheduler, cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.WARMUP_ITERS, max_iter,
                                cfg.SOLVER.WARMUP_METHOD)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Per-iteration lr schedule: multi-step (gamma at SOLVER.STEPS) or cosine, with optional warmup."""
    return LRMultiplier(optimizer, build_param_scheduler(cfg), cfg.SOLVER.MAX_ITER)
