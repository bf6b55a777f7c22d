"""Values no job can run with, refused before anything is built; each message names the key and the config file."""
import math
from typing import Any, Callable, List, Sequence, Tuple

import torch

from ..errors import ConfigError

Rule = Tuple[str, Callable[[Any], bool], str]  # (key, test of its value, what the value must be)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# Checked for every tool: the model and the loaders cannot be built otherwise.
MODEL_RULES: List[Rule] = [
    ("MODEL.CLASSIFIER.NUM_CLASSES", lambda v: v >= 1, "at least 1"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", lambda v: v >= 1, "at least 1"),
    ("SOLVER.IMS_PER_BATCH", lambda v: v >= 1, "at least 1 (images per step over all processes)"),
    ("DATALOADER.NUM_WORKERS", lambda v: v >= 0, "0 (load in the main process) or more"),
    ("DIST.TIMEOUT", lambda v: _finite(v) and v > 0, "a positive number of seconds"),
    # resdet.evaluation.coco_backends.COCO_EVAL_BACKENDS; whether the package is installed is checked there
    ("TEST.COCO_EVAL_BACKEND", lambda v: v in ("pycocotools", "faster_coco_eval"), "pycocotools or faster_coco_eval"),
    ("TEST.AUG.MIN_SIZES", lambda v: len(v) > 0 and all(isinstance(s, int) and s > 0 for s in v),
     "one or more positive integers (shorter sides in pixels)"),
    ("TEST.AUG.MAX_SIZE", lambda v: isinstance(v, int) and v > 0, "a positive integer (longer side in pixels)"),
    ("TEST.AUG.MERGE", lambda v: v in ("nms", "vote"), "nms or vote"),  # resdet.modeling.detector.tta.MERGE_METHODS
]
# Checked for training only: evaluation and inference never read them.
TRAINING_RULES: List[Rule] = [
    ("SOLVER.BASE_LR", lambda v: _finite(v) and v > 0, "a positive, finite number"),
    ("SOLVER.MAX_ITER", lambda v: v >= 1, "at least 1 (the number of training iterations)"),
    ("SOLVER.WARMUP_ITERS", lambda v: v >= 0, "0 (no warmup) or more"),
    ("SOLVER.WARMUP_FACTOR", lambda v: _finite(v) and v >= 0, "a number >= 0"),
    ("SOLVER.GAMMA", lambda v: _finite(v) and v > 0, "a positive number (the lr factor at each step)"),
    ("SOLVER.MOMENTUM", lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    ("SOLVER.WEIGHT_DECAY", lambda v: _finite(v) and v >= 0, "a number >= 0"),
    ("SOLVER.CHECKPOINT_PERIOD", lambda v: v >= 0, "0 or more iterations"),
    ("TEST.EVAL_PERIOD", lambda v: v >= 0, "0 (evaluate at the end only) or more iterations"),
    ("TEST.BEST_METRIC_MODE", lambda v: v in ("max", "min"), "max (higher is better) or min"),
]


def _lookup(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _where(key: str, config_file: str, overrides: Sequence[str]) -> str:
    """`FILE: KEY` with '(set on the command line)' when an override gave the value."""
    file = config_file or "default config"
    if key in list(overrides)[0::2]:
        return f"{file}: {key} (set on the command line)"
    return f"{file}: {key}"


def _check_rules(cfg, rules: List[Rule], config_file: str, overrides: Sequence[str]) -> None:
    for key, test, requirement in rules:
        value = _lookup(cfg, key)
        try:
            ok = bool(test(value))
        except TypeError:  # a value of another type than the default (a list for a number) cannot pass
            ok = False
        if not ok:
            raise ConfigError(f"{_where(key, config_file, overrides)} is {value!r}; it must be {requirement}")


def _check_steps(cfg, config_file: str, overrides: Sequence[str]) -> None:
    """Multi-step schedules: STEPS positive and increasing, none after MAX_ITER unless the run was shortened."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        return
    steps, max_iter = list(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER
    where = _where("SOLVER.STEPS", config_file, overrides)
    if any(step <= 0 for step in steps) or steps != sorted(set(steps)):
        raise ConfigError(f"{where} is {tuple(steps)}; it must be increasing iterations above 0")
    late = [step for step in steps if step > max_iter]
    if not late:
        return
    override_keys = list(overrides)[0::2]
    if "SOLVER.MAX_ITER" in override_keys and "SOLVER.STEPS" not in override_keys:
        # A run shortened on the command line (a smoke test, a quick demo) keeps the file's schedule; the
        # scheduler warns that the later steps are never reached.
        return
    raise ConfigError(f"{where} has {late} after SOLVER.MAX_ITER {max_iter}, which training never reaches; "
                      "lower the steps or raise SOLVER.MAX_ITER")


def check_world_size(cfg, world_size: int, config_file: str, overrides: Sequence[str] = ()) -> None:
    """SOLVER.IMS_PER_BATCH must split evenly over the job's processes."""
    batch = cfg.SOLVER.IMS_PER_BATCH
    if world_size > 1 and batch % world_size != 0:
        raise ConfigError(f"{_where('SOLVER.IMS_PER_BATCH', config_file, overrides)} is {batch}, not divisible by "
                          f"the {world_size} processes of this job; use a multiple of {world_size}")
    device = cfg.MODEL.DEVICE
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if world_size > 1 and cfg.MODEL.RESNETS.NORM == "SyncBN" and not on_cuda:
        raise ConfigError(f"{_where('MODEL.RESNETS.NORM', config_file, overrides)} is SyncBN, which synchronises "
                          f"over CUDA devices only, and MODEL.DEVICE is {device!r}: use BN (or FrozenBN) on the CPU")


def check_device_index(cfg, world_size: int, config_file: str, overrides: Sequence[str] = ()) -> None:
    """A job of several processes gives each its own GPU (its local rank's): MODEL.DEVICE may not name one."""
    device = cfg.MODEL.DEVICE
    if world_size > 1 and device.startswith("cuda:"):
        raise ConfigError(f"{_where('MODEL.DEVICE', config_file, overrides)} is {device!r}, a single GPU, but each of "
                          f"the {world_size} processes of this job uses its own: use MODEL.DEVICE cuda (a process then "
                          "runs on the GPU of its local rank; CUDA_VISIBLE_DEVICES chooses which GPUs the job gets)")


def validate_config(cfg, config_file: str = "", overrides: Sequence[str] = (), training: bool = False,
                    world_size: int = 1) -> None:
    """Raise ConfigError for an impossible value, naming the key and config_file; `training` adds the solver's
    keys and the split of SOLVER.IMS_PER_BATCH over `world_size` processes."""
    _check_rules(cfg, MODEL_RULES, config_file, overrides)
    check_device_index(cfg, world_size, config_file, overrides)
    if training:
        _check_rules(cfg, TRAINING_RULES, config_file, overrides)
        _check_steps(cfg, config_file, overrides)
        check_world_size(cfg, world_size, config_file, overrides)
