"""TEST.BEST_METRIC: OUTPUT_DIR/model_best.pth holds the weights of the evaluation with the best value so far."""
import logging
import math
import os
from typing import Dict, Optional, Tuple

from ..checkpoint.checkpointer import Checkpointer
from ..checkpoint.integrity import damage
from ..checkpoint.load import read_torch_file
from ..checkpoint.meta import META_KEY
from ..errors import ConfigError

logger = logging.getLogger(__name__)

BEST_NAME = "model_best"


class BestCheckpointer:
    """After each evaluation, `update(results, iteration)` writes model_best.pth (weights and meta, with
    "best_metric", "best_value", "best_iteration" and "best_mode" in the meta) when `metric` improved: above the best
    so far for mode "max", below it for "min". `iteration` counts the iterations done, as checkpoint names do
    (model_final.pth's evaluation is at SOLVER.MAX_ITER). A resumed run starts from the best recorded in
    model_best.pth."""

    def __init__(self, checkpointer: Checkpointer, metric: str, mode: str = "max", resume: bool = False):
        if mode not in ("max", "min"):
            raise ConfigError(f"TEST.BEST_METRIC_MODE is {mode!r}; it must be max or min")
        self.checkpointer = checkpointer
        self.metric = metric
        self.mode = mode
        self.path = os.path.join(checkpointer.save_dir, f"{BEST_NAME}.pth")
        self.best: Optional[Tuple[float, int]] = self._recorded_best() if resume else None  # (value, iteration)

    def _recorded_best(self) -> Optional[Tuple[float, int]]:
        """(value, iteration) from an existing, complete model_best.pth of the same metric and mode."""
        if not os.path.isfile(self.path):
            return None
        problem = damage(self.path)
        if problem:
            logger.warning("%s is damaged (%s); the next evaluation replaces it", self.path, problem)
            return None
        meta = read_torch_file(self.path).get(META_KEY, {})
        if meta.get("best_metric") != self.metric or meta.get("best_mode") != self.mode:
            logger.warning("%s kept the best %s (%s); this run keeps the best %s (%s) and will replace it", self.path,
                           meta.get("best_metric"), meta.get("best_mode"), self.metric, self.mode)
            return None
        logger.info("best %s so far: %.4f at iteration %d (%s)", self.metric, meta["best_value"],
                    meta["best_iteration"], self.path)
        return float(meta["best_value"]), int(meta["best_iteration"])

    def improves(self, value: float) -> bool:
        """Whether `value` is better than the best so far (a first finite value always is)."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best[0] if self.mode == "max" else value < self.best[0]

    def update(self, results: Dict[str, float], iteration: int) -> None:
        """Keep model_best.pth if results[metric] improved; `results` is {} on the processes that do not evaluate."""
        if not results:
            return
        if self.metric not in results:
            raise ConfigError(f"TEST.BEST_METRIC is {self.metric!r}, which the evaluation does not report; it reports "
                              f"{', '.join(sorted(results))}")
        value = float(results[self.metric])
        if not self.improves(value):
            logger.info("%s %.4f at iteration %d; the best is still %s", self.metric, value, iteration,
                        f"{self.best[0]:.4f} at iteration {self.best[1]}" if self.best else "none (not finite)")
            return
        self.best = (value, iteration)
        self.checkpointer.save_weights(BEST_NAME, best_metric=self.metric, best_value=value, best_iteration=iteration,
                                       best_mode=self.mode)
        logger.info("new best %s %.4f at iteration %d: saved %s", self.metric, value, iteration, self.path)
