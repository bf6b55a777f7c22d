"""Training engine: the trainer loop and its hooks, process launching, distributed helpers, tool set-up."""
from . import comm
from .defaults import default_argument_parser, default_setup, launch_tool, setup_config
from .hooks import EvalHook, IterationTimer, LRScheduler, PeriodicCheckpointer, PeriodicWriter, default_hooks
from .launch import launch
from .trainer import ClassificationLoss, HookBase, Trainer, model_losses, prepare_model

__all__ = [
    "comm", "launch", "Trainer", "HookBase", "ClassificationLoss", "model_losses", "prepare_model",
    "IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter", "default_hooks",
    "default_argument_parser", "default_setup", "setup_config", "launch_tool",
]
