"""A small training loop with hooks, shared by classification and detection.

Each iteration: `loss_dict = loss_fn(model, batch)`, backward of the summed losses, optimizer step.
Detection models return their loss dict themselves (`model_losses`); classification uses
`ClassificationLoss`, which computes cross-entropy from the model's logits. A non-finite loss stops training
before the optimizer step (TrainingDiverged); a StopRequest stops it between iterations.
"""
import logging
import math
import time
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import register_user_error
from ..utils.events import EventStorage
from . import comm
from .signals import StopRequest

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, object], Dict[str, torch.Tensor]]


@register_user_error  # reported as a message: the config (learning rate, warmup) or the data need attention
class TrainingDiverged(FloatingPointError):
    """A non-finite loss (found before the optimizer step) or non-finite weights (found before a save)."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


class HookBase:
    """Called around training and around each step; `self.trainer` is set when registered."""

    trainer: "Trainer" = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


def model_losses(model: nn.Module, batch) -> Dict[str, torch.Tensor]:
    """Loss function of models that return their loss dict in training mode (the detectors)."""
    return model(batch)


class ClassificationLoss:
    """Cross-entropy of model(images) against labels, for batches `(images (N,3,H,W), labels (N,))`."""

    def __init__(self, device: torch.device, channels_last: bool = False):
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, model: nn.Module, batch) -> Dict[str, torch.Tensor]:
        images, labels = batch
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        logits = model(images)  # (N, num_classes)
        return {"loss_cls": F.cross_entropy(logits.float(), labels.to(self.device, non_blocking=True))}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (cpu for a parameterless model)."""
    return next(model.parameters(), torch.empty(0)).device


def prepare_model(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """channels_last memory format if asked, and a DistributedDataParallel wrapper when world size > 1."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if comm.get_world_size() == 1:
        return model
    device = model_device(model)
    # broadcast_buffers=False: FrozenBN buffers are identical everywhere and BN keeps per-rank statistics.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False, find_unused_parameters=False)


class Trainer:
    """Runs iterations start_iter..max_iter-1 of `loss_fn` on batches from `data_loader`, calling hooks.

    With a `stop_request` (every rank passes one, or none), the ranks agree after each iteration whether any of
    them received a stop signal; if so, all stop there, with `stop_signal` set, and the hooks' after_train run
    (the checkpointer then saves).
    """

    def __init__(self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 loss_fn: LossFn = model_losses, amp: bool = False, stop_request: Optional[StopRequest] = None):
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device_type = model_device(model).type
        self.amp = amp
        # fp16 on CUDA needs loss scaling; bf16 (the CPU autocast type) has fp32's range and does not.
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp and self.device_type == "cuda" else None
        self.stop_request = stop_request
        self.stop_signal: Optional[int] = None  # the signal training stopped on, agreed by every rank
        self.hooks: List[HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0
        self.storage: Optional[EventStorage] = None
        self._data_iter = None

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (None entries are skipped); they run in registration order."""
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Train from start_iter (iterations already done) up to max_iter."""
        logger.info("training from iteration %d to %d", start_iter, max_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.storage = EventStorage(start_iter)
        self._data_iter = iter(self.data_loader)
        self.model.train()
        for hook in self.hooks:
            hook.before_train()
        try:
            for self.iter in range(start_iter, max_iter):
                self.storage.iter = self.iter
                for hook in self.hooks:
                    hook.before_step()
                self.run_step()
                for hook in self.hooks:
                    hook.after_step()
                if self.iter + 1 < max_iter and self._stop_agreed():
                    break
            # Iterations done: after_train sees iter == max_iter only when every iteration ran.
            self.iter = max_iter if self.stop_signal is None else self.iter + 1
        finally:
            for hook in self.hooks:
                hook.after_train()
            # The hooks and the trainer refer to each other: without this the loader's iterator, and its workers,
            # would live until the garbage collector ran (a spawn-started worker then waits 5 s to be killed).
            self._data_iter = None

    def _stop_agreed(self) -> bool:
        """Whether any rank received a stop signal; sets stop_signal (the same on every rank)."""
        if self.stop_request is None:
            return False
        signum = comm.max_over_ranks(self.stop_request.signum or 0)
        if signum:
            self.stop_signal = signum
        return bool(signum)

    def run_step(self) -> None:
        """One iteration: next batch, forward under autocast, backward, optimizer step."""
        start = time.perf_counter()
        batch = next(self._data_iter)
        data_time = time.perf_counter() - start
        autocast_dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        with torch.autocast(self.device_type, dtype=autocast_dtype, enabled=self.amp):
            loss_dict = self.loss_fn(self.model, batch)
        losses = sum(loss_dict.values())
        # Reduced over ranks so that every rank sees the same values and raises together.
        reduced = comm.reduce_loss_dict(loss_dict)
        total_loss = sum(reduced.values())
        if not math.isfinite(total_loss):
            # Raised before the optimizer step, so the weights stay those of the last finite step.
            raise TrainingDiverged(f"loss became non-finite at iteration {self.iter}: {reduced}", self.iter)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self.optimizer.step()
        self.storage.put_scalars(data_time=data_time, total_loss=total_loss, **reduced)
