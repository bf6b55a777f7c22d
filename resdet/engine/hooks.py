"""Hooks of the training loop: timing, lr schedule, checkpoints, evaluation, metrics writers."""
import logging
import time
from typing import Callable, Dict, List, Optional

from . import comm
from .trainer import HookBase

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Records `time` (seconds per iteration, data loading included) and logs the total at the end."""

    def __init__(self):
        self._step_start = 0.0
        self._train_start = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("time", time.perf_counter() - self._step_start)

    def after_train(self) -> None:
        done = self.trainer.iter - self.trainer.start_iter
        total = time.perf_counter() - self._train_start
        logger.info("%d iterations in %.1f s (%.3f s/it)", done, total, total / max(done, 1))


class LRScheduler(HookBase):
    """Records the lr used by this iteration, then steps the per-iteration scheduler."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        # the lr of the parameters at SOLVER.BASE_LR's scale, not of a group with its own multiplier
        groups = self.trainer.optimizer.param_groups
        lr = next((g["lr"] for g in groups if g.get("lr_factor", 1.0) == 1.0), groups[0]["lr"])
        self.trainer.storage.put_scalar("lr", lr, smoothing=False)
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Saves model_{iter:07d}.pth every `period` iterations and model_final.pth after the last one."""

    def __init__(self, checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = period

    def after_step(self) -> None:
        done = self.trainer.iter + 1  # iterations completed; resuming starts there
        if done >= self.trainer.max_iter:
            self.checkpointer.save("model_final", iteration=done)
        elif self.period > 0 and done % self.period == 0:
            self.checkpointer.save(f"model_{done:07d}", iteration=done)


class EvalHook(HookBase):
    """Runs eval_fn() every `period` iterations (0: never) and once after the last iteration.

    eval_fn returns {metric: value}; the values go to the metrics as `eval/<metric>`.
    """

    def __init__(self, period: int, eval_fn: Callable[[], Dict[str, float]]):
        self.period = period
        self.eval_fn = eval_fn

    def _evaluate(self) -> None:
        results = self.eval_fn()
        for name, value in results.items():
            self.trainer.storage.put_scalar(f"eval/{name}", value, smoothing=False)
        # The next training step must not start on one rank while another still evaluates.
        comm.synchronize()

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done < self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:
            self._evaluate()


class PeriodicWriter(HookBase):
    """Calls each writer every `period` iterations and after the last one, then closes them."""

    def __init__(self, writers: List, period: int = 20):
        self.writers = writers
        self.period = period

    def _write(self) -> None:
        for writer in self.writers:
            writer.write(self.trainer.storage)

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period == 0 or done == self.trainer.max_iter:
            self._write()

    def after_train(self) -> None:
        # The final evaluation runs in an earlier after_train: write its results too.
        self._write()
        for writer in self.writers:
            writer.close()


def default_hooks(scheduler, checkpointer, checkpoint_period: int, eval_period: int,
                  eval_fn: Optional[Callable[[], Dict[str, float]]], writers: Optional[List]) -> List[HookBase]:
    """Timer, lr schedule, checkpoints, evaluation and writers in the order they must run."""
    hooks = [IterationTimer(), LRScheduler(scheduler), PeriodicCheckpointer(checkpointer, checkpoint_period)]
    if eval_fn is not None:
        hooks.append(EvalHook(eval_period, eval_fn))
    if writers:
        hooks.append(PeriodicWriter(writers))
    return hooks
