"""Training checkpoints: {"model", "optimizer", "scheduler", "iteration", ...}, written atomically.

Every file (the checkpoint and the `last_checkpoint` pointer beside it) is written to a temporary file in
the same directory, fsynced, then renamed over the target, so a crash, Ctrl-C or full disk during a save leaves
the previous checkpoint and pointer intact; the pointer moves only once the new file is complete. Beside each
checkpoint a `.sha256` sidecar records its digest, so that resuming detects a file damaged later on disk and takes
the previous complete one (integrity.py). Weights holding NaN or infinity are never written.
"""
import errno
import io
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..engine import comm
from ..errors import CheckpointError, register_user_error
from .integrity import HashingWriter, digest_line, digest_path, newest_complete, remove_stale_temporaries
from .load import read_torch_file
from .meta import META_KEY

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"


@register_user_error  # reported as a message: the disk or the permissions need attention, not the code
class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, permissions, I/O error); last_checkpoint is unchanged."""


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN or infinite values, so its checkpoint was not written."""


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call write(file) on a temporary file beside `path`, fsync it, then rename it to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp's files are private (0600); a checkpoint gets the permissions open() would have given it.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
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


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


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


def non_finite_entries(state_dict: Dict[str, Any]) -> List[str]:
    """Names of the floating-point tensors of `state_dict` holding NaN or infinity."""
    return [name for name, value in state_dict.items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


def _free_space(directory: str) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 2**30:.2f} GiB"
    except OSError:
        return "unknown"


def _strip_ddp_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def _save_hashed(path: str, data: Dict[str, Any]) -> str:
    """torch.save(data) to `path` atomically; returns the SHA-256 of the bytes written."""
    writers = []

    def write(file) -> None:
        writers.append(HashingWriter(file))
        torch.save(data, writers[-1])

    atomic_write(path, write)
    return writers[-1].sha256.hexdigest()


def write_checkpoint_file(path: str, data: Dict[str, Any]) -> None:
    """torch.save(data) to `path` atomically, with its path.sha256 digest beside it (what --resume and --eval-only
    check); the folder is created."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    digest = _save_hashed(path, data)
    atomic_write(digest_path(path), lambda file: file.write(digest_line(digest, path)))


def pointed_checkpoint(save_dir: str) -> Optional[str]:
    """The file save_dir/last_checkpoint names (complete or not), or None when there is no pointer."""
    pointer = os.path.join(save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, errors="replace") as file:  # a damaged pointer names a missing file, not a decode error
        return os.path.join(save_dir, file.read().strip())


def newest_complete_checkpoint(save_dir: str) -> Optional[str]:
    """The checkpoint --resume would continue from: what last_checkpoint names if it is complete, else the newest
    complete older one (each damaged one passed over is logged with why); None when there is none."""
    pointed = pointed_checkpoint(save_dir)
    if pointed is None:
        return None
    chosen, damaged = newest_complete(save_dir, pointed)
    for path, reason in damaged:
        logger.warning("checkpoint %s is damaged: %s; %s", path, reason,
                       f"using the previous complete one, {chosen}" if chosen else "no older complete checkpoint")
    if chosen is None and damaged:
        raise CheckpointError(f"no complete checkpoint in {save_dir}: "
                              + "; ".join(f"{path}: {reason}" for path, reason in damaged)
                              + ". Start again without --resume, or restore a copy of a checkpoint")
    return chosen


def resume_advice(save_dir: str, alternative: str = "") -> str:
    """Which checkpoint --resume would continue from, as a sentence for an error message."""
    try:
        path = newest_complete_checkpoint(save_dir)
    except (CheckpointError, OSError) as err:
        return f"No checkpoint in {save_dir} can be resumed from: {err}"
    if path is None:
        return f"No checkpoint was written to {save_dir}: the job must start again."
    other = f" ({alternative})" if alternative else ""
    return f"The newest complete checkpoint is {path}: the same command with --resume continues from it{other}."


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
        """Write save_dir/{name}.pth (extra: tensors or plain Python values) and point last_checkpoint at it.

        Call it on every rank: the checkpointables' state may be gathered from all of them, and every rank raises
        NonFiniteWeightsError (nothing written) or CheckpointWriteError (last_checkpoint unchanged) together.
        """
        basename = f"{name}.pth"
        data = {"model": self.model.state_dict(), **extra}
        bad = non_finite_entries(data["model"])
        # Ranks agree: with per-rank normalisation statistics one rank alone may hold a non-finite buffer.
        if comm.max_over_ranks(int(bool(bad))):
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            names = ", ".join(bad[:5]) + more if bad else "another rank's model"
            raise NonFiniteWeightsError(f"not saving {basename}: non-finite values in {names}")
        if self.meta:
            data[META_KEY] = self.meta
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        error = self._write(basename, data) if self.save_to_disk else None
        if comm.max_over_ranks(int(error is not None)):
            raise error or CheckpointWriteError(f"rank 0 could not write checkpoint {basename}: see its log")
        return os.path.join(self.save_dir, basename) if self.save_to_disk else None

    def save_weights(self, name: str, **meta: Any) -> Optional[str]:
        """Write save_dir/{name}.pth with the weights and `meta` (merged into the checkpointer's) only: a file to
        evaluate or deploy, not to resume from. last_checkpoint is left alone. The main process writes; no collective,
        so any rank may call it alone. Returns the path (None on other ranks)."""
        if not self.save_to_disk:
            return None
        path = os.path.join(self.save_dir, f"{name}.pth")
        write_checkpoint_file(path, {"model": self.model.state_dict(), META_KEY: {**(self.meta or {}), **meta}})
        return path

    def _write(self, basename: str, data: Dict[str, Any]) -> Optional[CheckpointWriteError]:
        """Write the checkpoint, then the pointer; on failure the error to raise (after the ranks agree)."""
        path = os.path.join(self.save_dir, basename)
        previous = self.get_checkpoint_file()
        try:
            os.makedirs(self.save_dir, exist_ok=True)
            digest = _save_hashed(path, data)
            atomic_write(digest_path(path), lambda file: file.write(digest_line(digest, path)))
            atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), lambda file: file.write(basename.encode()))
        except OSError as err:
            kept = f"last_checkpoint still names {previous}, which is complete" if previous else \
                "there is no earlier checkpoint"
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                advice = "free some space (SOLVER.CHECKPOINT_KEEP keeps only the newest checkpoints)"
            else:
                advice = f"check that {self.save_dir} is writable"
            error = CheckpointWriteError(
                err.errno, f"could not write checkpoint {path}: {err.strerror or err} (free space in "
                f"{self.save_dir}: {_free_space(self.save_dir)}); {kept}; {advice}, then continue with --resume")
            error.__cause__ = err
            logger.error("%s", error.strerror)
            return error
        logger.info("saved checkpoint %s", path)
        return None

    def get_checkpoint_file(self) -> Optional[str]:
        """The file last_checkpoint points to, or None when there is none."""
        return pointed_checkpoint(self.save_dir)

    def has_checkpoint(self) -> bool:
        """True when save_dir has a last_checkpoint pointer."""
        return self.get_checkpoint_file() is not None

    def load(self, path: str, with_checkpointables: bool = True) -> Dict[str, Any]:
        """Restore the model (and optimizer/scheduler) from `path`; return the remaining entries."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        data = read_torch_file(path)  # weights_only; a refused or unreadable file raises a CheckpointError
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
        """resume and a last_checkpoint exists: restore everything from the newest complete checkpoint (the one it
        names, or the newest older one if that is damaged); otherwise load weights from `path`.

        Call it on every rank: they check that they chose the same file."""
        if resume and self.has_checkpoint():
            chosen = newest_complete_checkpoint(self.save_dir)
            choices = comm.all_gather(os.path.basename(chosen))
            if len(set(choices)) > 1:
                raise CheckpointError(f"the processes of this job would resume from different checkpoints {choices}: "
                                      f"is {self.save_dir} the same folder on every machine?")
            if self.save_to_disk:
                remove_stale_temporaries(self.save_dir)
            return self.load(chosen)
        if path:
            from resdet import load_weights

            load_weights(self.model, path)
        return {}
