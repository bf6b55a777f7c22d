"""Learning-rate schedules in iterations: fvcore param schedulers applied to the optimizer's base lr."""
import math
from typing import List

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)

WARMUP_METHODS = ("linear", "constant")


class WarmupParamScheduler(CompositeParamScheduler):
    """`scheduler` preceded by a warmup over the first `warmup_length` fraction of training.

    "linear" ramps from warmup_factor * v to v, "constant" holds warmup_factor * v (the paper's
    ResNet-110 warmup: lr 0.01 for 400 iterations, then 0.1), where v is the schedule's value at
    the end of the warmup.
    """

    def __init__(self, scheduler: ParamScheduler, warmup_factor: float, warmup_length: float,
                 warmup_method: str = "linear"):
        end_value = scheduler(warmup_length)
        start_value = warmup_factor * end_value
        if warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, end_value)
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start_value)
        else:
            raise ValueError(f"SOLVER.WARMUP_METHOD: unknown {warmup_method!r}; choose one of {WARMUP_METHODS}")
        super().__init__([warmup, scheduler], interval_scaling=["rescaled", "fixed"],
                         lengths=[warmup_length, 1 - warmup_length])


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
