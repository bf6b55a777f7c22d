"""Checkpoints that can be trusted after a crash, a `kill -9` or a damaged disk.

Every training checkpoint `model_0000400.pth` gets a sidecar `model_0000400.pth.sha256` (the format `sha256sum -c`
reads) holding the digest of the bytes written, computed while writing. A file whose bytes no longer match, that
is cut short, or that torch cannot read is damaged: resuming reports it by name and takes the newest older
checkpoint that is complete. (torch.load does not check the checksums of its zip records: a flipped byte in a
tensor loads as a wrong weight, hence the digest.) A checkpoint without a sidecar (written by hand, or by an
older version) is accepted when torch can read it.
"""
import hashlib
import logging
import os
import re
from typing import BinaryIO, List, Optional, Tuple

logger = logging.getLogger(__name__)

DIGEST_SUFFIX = ".sha256"
_PERIODIC = re.compile(r"model_(\d{7})\.pth")
_CHUNK = 1 << 22


class HashingWriter:
    """A write-only file wrapper that computes the SHA-256 of everything written through it."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def digest_path(path: str) -> str:
    """The sidecar of a checkpoint: `<path>.sha256`."""
    return path + DIGEST_SUFFIX


def digest_line(hexdigest: str, path: str) -> bytes:
    """One line of `sha256sum` output for `path`."""
    return f"{hexdigest}  {os.path.basename(path)}\n".encode()


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    sha256 = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            sha256.update(chunk)
    return sha256.hexdigest()


def damage(path: str) -> Optional[str]:
    """Why the checkpoint at `path` cannot be used (missing, digest mismatch, unreadable), or None if it can."""
    if not os.path.isfile(path):
        return "the file is missing"
    sidecar = digest_path(path)
    if os.path.isfile(sidecar):
        with open(sidecar) as file:
            expected = file.read().split()[:1]
        actual = file_sha256(path)
        if expected != [actual]:
            return (f"its SHA-256 {actual[:12]}... differs from the {expected[0][:12] if expected else 'empty'}... "
                    f"recorded in {os.path.basename(sidecar)} when it was written")
        return None
    from .load import read_torch_file  # without a digest: whether torch can read it at all
    from .safe_pickle import UnsafePickleError

    try:
        read_torch_file(path)
    except UnsafePickleError:
        raise  # a file that would run code is refused by name, not passed over as damaged
    except Exception as err:  # any other failure to read means the file cannot be resumed from
        return f"torch cannot read it ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})"
    return None


def _older_checkpoints(save_dir: str, than: Optional[str]) -> List[str]:
    """model_NNNNNNN.pth files of save_dir, newest first, below the iteration of `than` when it is periodic."""
    try:
        names = os.listdir(save_dir)
    except OSError:
        return []
    periodic = sorted((name for name in names if _PERIODIC.fullmatch(name)), reverse=True)
    match = _PERIODIC.fullmatch(os.path.basename(than or ""))
    if match:
        periodic = [name for name in periodic if name < os.path.basename(than)]
    return [os.path.join(save_dir, name) for name in periodic]


def newest_complete(save_dir: str, pointed: Optional[str]) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The checkpoint to resume from: `pointed` (what last_checkpoint names) if it is complete, else the newest
    older model_NNNNNNN.pth that is. Returns it (None if none is) and the damaged ones passed over, with why."""
    candidates = ([pointed] if pointed else []) + _older_checkpoints(save_dir, pointed)
    damaged = []
    for path in candidates:
        reason = damage(path)
        if reason is None:
            return path, damaged
        damaged.append((path, reason))
    return None, damaged


def remove_stale_temporaries(save_dir: str) -> None:
    """Delete the temporary files of checkpoint writes that a killed process left (`.<name>.<random>.tmp`)."""
    try:
        names = os.listdir(save_dir)
    except OSError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(".tmp") and (".pth." in name or name.startswith(".last_checkpoint.")):
            try:
                os.remove(os.path.join(save_dir, name))
                logger.info("removed %s, left by a checkpoint write that did not finish", name)
            except OSError as err:
                logger.warning("could not remove %s: %s", name, err)
