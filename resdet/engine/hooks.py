"""Hooks of the training loop: timing, lr schedule, checkpoints, evaluation, metrics writers."""
import logging
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence

from ..checkpoint.integrity import digest_path
from . import comm
from .rng import preserved_rng_state
from .trainer import HookBase, TrainingDiverged

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


_PERIODIC_NAME = re.compile(r"model_(\d{7})\.pth")


class PeriodicCheckpointer(HookBase):
    """Saves model_{iter:07d}.pth every `period` iterations, and when training stops on a signal, and
    model_final.pth after the last iteration; with keep > 0 only the newest `keep` model_{iter:07d}.pth stay.

    Weights that became non-finite are not saved: training stops with TrainingDiverged.
    """

    def __init__(self, checkpointer, period: int, keep: int = 0):
        self.checkpointer = checkpointer
        self.period = period
        self.keep = keep
        self._saved_at = -1  # iterations done at the latest save

    def _save(self, name: str, done: int) -> None:
        try:
            self.checkpointer.save(name, iteration=done)
        except FloatingPointError as err:  # the checkpointer's NonFiniteWeightsError: nothing was written
            raise TrainingDiverged(f"weights became non-finite at iteration {done - 1}: {err}", done - 1) from None
        self._saved_at = done
        if self.keep > 0 and self.checkpointer.save_to_disk:
            self._remove_old()

    def _remove_old(self) -> None:
        """Delete all but the newest `keep` periodic checkpoints (never the one last_checkpoint names)."""
        directory = self.checkpointer.save_dir
        current = os.path.basename(self.checkpointer.get_checkpoint_file() or "")
        periodic = sorted(name for name in os.listdir(directory) if _PERIODIC_NAME.fullmatch(name))
        for name in periodic[:-self.keep]:
            if name == current:
                continue
            try:
                os.remove(os.path.join(directory, name))
                if os.path.exists(digest_path(os.path.join(directory, name))):
                    os.remove(digest_path(os.path.join(directory, name)))
                logger.info("removed old checkpoint %s (SOLVER.CHECKPOINT_KEEP %d)", name, self.keep)
            except OSError as err:
                logger.warning("could not remove old checkpoint %s: %s", name, err)

    def after_step(self) -> None:
        done = self.trainer.iter + 1  # iterations completed; resuming starts there
        if done >= self.trainer.max_iter:
            self._save("model_final", done)
        elif self.period > 0 and done % self.period == 0:
            self._save(f"model_{done:07d}", done)

    def after_train(self) -> None:
        if self.trainer.stop_signal is None:
            return
        done = self.trainer.iter
        if self._saved_at != done:
            self._save(f"model_{done:07d}", done)
        # No rank may exit (and have a launcher end the others) before rank 0 has written the file.
        comm.synchronize()


class EvalHook(HookBase):
    """Runs eval_fn() every `period` iterations (0: never) and once after the last iteration.

    eval_fn returns {metric: value}; the values go to the metrics as `eval/<metric>`, and to `best`
    (TEST.BEST_METRIC's BestCheckpointer) when given.
    """

    def __init__(self, period: int, eval_fn: Callable[[], Dict[str, float]], best=None):
        self.period = period
        self.eval_fn = eval_fn
        self.best = best

    def _evaluate(self, done: int) -> None:
        # Evaluation must not consume the training's random streams: a resumed run did not evaluate here.
        with preserved_rng_state():
            results = self.eval_fn()
        for name, value in results.items():
            self.trainer.storage.put_scalar(f"eval/{name}", value, smoothing=False)
        if self.best is not None:
            self.best.update(results, done)
        # The next training step must not start on one rank while another still evaluates.
        comm.synchronize()

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done < self.trainer.max_iter:
            self._evaluate(done)

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:
            self._evaluate(self.trainer.iter)


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
                  eval_fn: Optional[Callable[[], Dict[str, float]]], writers: Optional[List],
                  checkpoint_keep: int = 0, best=None, extra: Sequence[HookBase] = ()) -> List[HookBase]:
    """Timer, lr schedule, checkpoints, evaluation (with `best`, a BestCheckpointer), the `extra` hooks and writers
    in the order they must run."""
    hooks = [IterationTimer(), LRScheduler(scheduler),
             PeriodicCheckpointer(checkpointer, checkpoint_period, checkpoint_keep)]
    if eval_fn is not None:
        hooks.append(EvalHook(eval_period, eval_fn, best))
    hooks.extend(extra)
    if writers:
        hooks.append(PeriodicWriter(writers))
    return hooks
