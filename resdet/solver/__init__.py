"""Optimizer and learning-rate schedules built from cfg.SOLVER."""
from .build import build_lr_scheduler, build_optimizer
from .lr_scheduler import LRMultiplier, WarmupParamScheduler

__all__ = ["build_optimizer", "build_lr_scheduler", "LRMultiplier", "WarmupParamScheduler"]
