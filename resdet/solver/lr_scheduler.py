"""Learning-rate schedules in iterations: fvcore param schedulers applied to the optimizer's base lr."""
import math
from typing import List

import torch
from fvcore.common.param_scheduler import ParamScheduler

from ..errors import ConfigError

WARMUP_METHODS = ("linear", "constant")


class WarmupParamScheduler(ParamScheduler):
    """`scheduler` preceded by a warmup over the first `warmup_iters` of `max_iter` iterations.

    "linear" ramps from warmup_factor * v to v, "constant" holds warmup_factor * v (the paper's
    ResNet-110 warmup: lr 0.01 for 400 iterations, then 0.1), where v is the schedule's value at
    the end of the warmup. The warmup is computed from the iteration number, so iteration i gets the same
    multiplier whatever max_iter is (a run shorter than its warmup ends during it): a run trained to
    MAX_ITER N/2 and resumed to N follows the lrs of a run trained to N straight (with a multi-step schedule).
    """

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_iters: int, max_iter: int,
                 warmup_method: str = "linear"):
        if warmup_method not in WARMUP_METHODS:
            raise ConfigError(f"SOLVER.WARMUP_METHOD: unknown {warmup_method!r}; choose one of {WARMUP_METHODS}")
        self.scheduler, self.warmup_iters, self.max_iter, self.method = scheduler, warmup_iters, max_iter, warmup_method
        self.end_value = scheduler(min(warmup_iters / max_iter, 1.0))
        self.start_value = warmup_factor * self.end_value

    def __call__(self, where: float) -> float:
        iteration = round(where * self.max_iter)  # exact: where is iteration / max_iter
        if iteration >= self.warmup_iters:
            return self.scheduler(where)
        if self.method == "constant":
            return self.start_value
        return self.start_value + (self.end_value - self.start_value) * iteration / self.warmup_iters


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """lr of each param group = its initial lr × multiplier(iteration / max_iter); step once per iteration.

    Its state_dict holds only numbers, so checkpoints load with torch.load(weights_only=True).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int,
                 last_iter: int = -1):
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def get_lr(self) -> List[float]:
        # Past max_iter (the step after the last iteration) the schedule holds its final value.
        where = min(self.last_epoch / self._max_iter, 1.0)
        multiplier = self._multiplier(where)
        if not math.isfinite(multiplier):
            raise FloatingPointError(f"lr multiplier at iteration {self.last_epoch} is {multiplier}")
        return [base_lr * multiplier for base_lr in self.base_lrs]
