"""Training checkpoints: {"model", "optimizer", "scheduler", "iteration", ...}, written atomically.

Every file (the checkpoint and the `last_checkpoint` pointer beside it) is written to a temporary file in
the same directory, fsynced, then renamed over the target, so a crash or Ctrl-C during a save leaves the
previous checkpoint and pointer intact.
"""
import io
import logging
import os
import tempfile
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..engine import comm
from .meta import META_KEY

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call write(file) on a temporary file beside `path`, fsync it, then rename it to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _strip_ddp_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


class Checkpointer:
    """Saves and restores the model and any objects with state_dict()/load_state_dict() (optimizer, scheduler)."""

    def __init__(self, model: nn.Module, save_dir: str, *, save_to_disk: Optional[bool] = None,
                 meta: Optional[Dict[str, Any]] = None, **checkpointables: Any):
        self.model = comm.unwrap_model(model)
        self.save_dir = save_dir
        self.save_to_disk = comm.is_main_process() if save_to_disk is None else save_to_disk
        self.meta = meta  # plain types (resdet/checkpoint/meta.py), saved with every checkpoint
        self.checkpointables = checkpointables

    def save(self, name: str, **extra: Any) -> Optional[str]:
        """Write save_dir/{name}.pth (extra: tensors or plain Python values) and point last_checkpoint at it."""
        if not self.save_to_disk:
            return None
        data = {"model": self.model.state_dict(), **extra}
        if self.meta:
            data[META_KEY] = self.meta
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        os.makedirs(self.save_dir, exist_ok=True)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        atomic_write(path, lambda file: torch.save(data, file))
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), lambda file: file.write(basename.encode()))
        logger.info("saved checkpoint %s", path)
        return path

    def get_checkpoint_file(self) -> Optional[str]:
        """The file last_checkpoint points to, or None when there is none."""
        pointer = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as file:
            basename = file.read().strip()
        return os.path.join(self.save_dir, basename)

    def has_checkpoint(self) -> bool:
        """True when save_dir has a last_checkpoint pointer."""
        return self.get_checkpoint_file() is not None

    def load(self, path: str, with_checkpointables: bool = True) -> Dict[str, Any]:
        """Restore the model (and optimizer/scheduler) from `path`; return the remaining entries."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        data = torch.load(path, map_location="cpu", weights_only=True)
        if "model" not in data:
            raise KeyError(f"{path}: not a training checkpoint (no 'model' entry; keys {sorted(data)[:10]})")
        incompatible = self.model.load_state_dict(_strip_ddp_prefix(data.pop("model")), strict=False)
        if incompatible.missing_keys or incompatible.unexpected_keys:
            raise KeyError(f"{path}: missing keys {incompatible.missing_keys}, "
                           f"unexpected keys {incompatible.unexpected_keys}")
        for key, obj in self.checkpointables.items():
            if with_checkpointables and key in data:
                obj.load_state_dict(data.pop(key))
        logger.info("loaded checkpoint %s", path)
        return data

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """resume and a last_checkpoint exists: restore everything from it; otherwise load weights from `path`."""
        if resume and self.has_checkpoint():
            return self.load(self.get_checkpoint_file())
        if path:
            from resdet import load_weights

            load_weights(self.model, path)
        return {}
