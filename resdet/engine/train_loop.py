"""The part of every training tool after the model and data are built: evaluation-only loading, or the
optimizer, schedule, checkpointer, hooks and the trainer loop."""
from typing import Callable, Dict, Iterable, Optional

from torch import nn

from ..checkpoint.checkpointer import Checkpointer
from ..checkpoint.meta import model_meta
from ..config import ConfigError
from ..solver import build_lr_scheduler, build_optimizer
from ..utils.events import default_writers
from . import comm
from .hooks import default_hooks
from .trainer import Trainer, prepare_model

EvaluateFn = Callable[[nn.Module], Dict[str, float]]


def load_for_evaluation(cfg, model: nn.Module) -> None:
    """--eval-only: MODEL.WEIGHTS was loaded by build_model; otherwise load OUTPUT_DIR/last_checkpoint."""
    if cfg.MODEL.WEIGHTS:
        return
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR)
    if not checkpointer.has_checkpoint():
        raise ConfigError(f"--eval-only: MODEL.WEIGHTS is empty and {cfg.OUTPUT_DIR} has no last_checkpoint")
    checkpointer.load(checkpointer.get_checkpoint_file(), with_checkpointables=False)


def run_training(cfg, resume: bool, model: nn.Module, train_loader: Iterable, loss_fn: Callable,
                 evaluate: Optional[EvaluateFn]) -> None:
    """Train to SOLVER.MAX_ITER (from the last checkpoint with `resume`), evaluating per TEST.EVAL_PERIOD and at the end."""
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, meta=model_meta(cfg), optimizer=optimizer,
                                scheduler=scheduler)
    start_iter = checkpointer.resume_or_load("", resume=resume).get("iteration", 0)
    model = prepare_model(model, cfg.SOLVER.CHANNELS_LAST)
    trainer = Trainer(model, train_loader, optimizer, loss_fn, amp=cfg.SOLVER.AMP.ENABLED)
    writers = default_writers(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, start_iter) if comm.is_main_process() else None
    eval_fn = (lambda: evaluate(model)) if evaluate is not None else None
    trainer.register_hooks(default_hooks(scheduler, checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                         cfg.TEST.EVAL_PERIOD, eval_fn, writers))
    trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
