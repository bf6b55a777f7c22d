"""The part of every training tool after the model and data are built: evaluation-only loading, or the
optimizer, schedule, checkpointer, hooks and the trainer loop."""
import logging
from typing import Callable, Dict, Iterable, Optional, Sequence

from torch import nn

from ..checkpoint.checkpointer import Checkpointer, newest_complete_checkpoint, resume_advice
from ..checkpoint.meta import model_meta
from ..config import ConfigError
from ..solver import build_lr_scheduler, build_optimizer
from ..utils.events import default_writers
from . import comm
from .best_checkpoint import BestCheckpointer
from .hooks import default_hooks
from .rng import RNGStates
from .signals import StopRequest, TrainingInterrupted, signal_name
from .trainer import HookBase, Trainer, TrainingDiverged, prepare_model

logger = logging.getLogger(__name__)

EvaluateFn = Callable[[nn.Module], Dict[str, float]]


def load_for_evaluation(cfg, model: nn.Module) -> None:
    """--eval-only: MODEL.WEIGHTS was loaded by build_model; otherwise load OUTPUT_DIR/last_checkpoint."""
    if cfg.MODEL.WEIGHTS:
        return
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR)
    if not checkpointer.has_checkpoint():
        raise ConfigError(f"--eval-only: MODEL.WEIGHTS is empty and {cfg.OUTPUT_DIR} has no last_checkpoint")
    checkpointer.load(newest_complete_checkpoint(cfg.OUTPUT_DIR), with_checkpointables=False)


def _resumable_state(trainer: Trainer, train_loader: Iterable, rng_states: RNGStates, optimizer,
                     scheduler) -> Dict[str, object]:
    """Everything a checkpoint needs for a resumed run to equal an uninterrupted one."""
    state = {"optimizer": optimizer, "scheduler": scheduler, "rng": rng_states}
    if hasattr(train_loader, "state_dict"):  # the position in the data order
        state["data_loader"] = train_loader
    if trainer.grad_scaler is not None:
        state["grad_scaler"] = trainer.grad_scaler
    return state


def _last_good_checkpoint(checkpointer: Checkpointer) -> str:
    path = checkpointer.get_checkpoint_file()
    if path is None:
        return "no checkpoint was saved before it; lower SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS and start again"
    return (f"the last good checkpoint is {path}: --resume continues from it (a lower SOLVER.BASE_LR or longer "
            f"SOLVER.WARMUP_ITERS may avoid the divergence)")


def run_training(cfg, resume: bool, model: nn.Module, train_loader: Iterable, loss_fn: Callable,
                 evaluate: Optional[EvaluateFn], extra_hooks: Sequence[HookBase] = ()) -> None:
    """Train to SOLVER.MAX_ITER, evaluating per TEST.EVAL_PERIOD and at the end; `extra_hooks` run after the
    schedule, checkpoint and evaluation hooks and before the metrics writers (so what they record is written).

    With `resume`, continue from OUTPUT_DIR/last_checkpoint exactly as the interrupted run would have (weights,
    optimizer, schedule, random generators, position in the data order). SIGTERM/SIGINT: finish the iteration,
    save a checkpoint, raise TrainingInterrupted. A non-finite loss or weights: TrainingDiverged, naming the last
    good checkpoint.
    """
    keep = cfg.SOLVER.CHECKPOINT_KEEP
    if keep < 0:
        raise ConfigError(f"SOLVER.CHECKPOINT_KEEP: 0 keeps every checkpoint, N > 0 the newest N; got {keep}")
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    model = prepare_model(model, cfg.SOLVER.CHANNELS_LAST)
    stop_request = StopRequest()
    trainer = Trainer(model, train_loader, optimizer, loss_fn, amp=cfg.SOLVER.AMP.ENABLED, stop_request=stop_request)
    rng_states = RNGStates()
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, meta=model_meta(cfg),
                                **_resumable_state(trainer, train_loader, rng_states, optimizer, scheduler))
    start_iter = checkpointer.resume_or_load("", resume=resume).get("iteration", 0)
    writers = default_writers(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, start_iter) if comm.is_main_process() else None
    eval_fn = (lambda: evaluate(model)) if evaluate is not None else None
    if cfg.TEST.BEST_METRIC and eval_fn is None:
        raise ConfigError(f"TEST.BEST_METRIC is {cfg.TEST.BEST_METRIC!r} but DATASETS.TEST is empty: nothing is "
                          "evaluated to pick the best model from")
    best = BestCheckpointer(checkpointer, cfg.TEST.BEST_METRIC, cfg.TEST.BEST_METRIC_MODE,
                            resume) if cfg.TEST.BEST_METRIC else None
    trainer.register_hooks(default_hooks(scheduler, checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                         cfg.TEST.EVAL_PERIOD, eval_fn, writers, keep, best, extra_hooks))
    rng_states.restore()
    from ..data.skip_corrupt import log_skipped_images  # here: resdet.data imports resdet.engine

    with stop_request:
        try:
            trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
        except TrainingDiverged as err:
            raise TrainingDiverged(f"{err}; {_last_good_checkpoint(checkpointer)}", err.iteration) from None
        except Exception as err:
            # Logged here, while a launcher's SIGTERM to the survivors only sets stop_request: once training has
            # unwound, the signal would end this process before the error could be reported.
            if comm.get_world_size() > 1:
                logger.error("rank %d stopped on %s: %s (when a collective failed, another process of the job probably "
                             "ended first: the launcher's report names it). %s", comm.get_rank(), type(err).__name__,
                             str(err).strip().splitlines()[0][:300] if str(err).strip() else "",
                             resume_advice(cfg.OUTPUT_DIR, "--max-restarts N restarts a job by itself"))
            raise
        finally:
            log_skipped_images(train_loader)  # DATALOADER.SKIP_CORRUPT's count, however training ended
    if trainer.stop_signal is not None:
        message = (f"stopped by {signal_name(trainer.stop_signal)} after iteration {trainer.iter} of "
                   f"{cfg.SOLVER.MAX_ITER}: checkpoint {checkpointer.get_checkpoint_file() or 'written by rank 0'}; "
                   f"continue with --resume")
        logger.warning("%s", message)
        raise TrainingInterrupted(trainer.stop_signal, message)
