"""DATALOADER.SKIP_CORRUPT: a training sample whose image cannot be read is replaced by the next readable one.

The replacement is the next index (wrapping around) whose image reads, so it depends only on the files, not
on which worker or process met the bad image, nor on what was read before: a resumed run skips exactly as
an uninterrupted one. Each unreadable image is warned about once; log_skipped_images() gives the count.
"""
import ctypes
import logging
import multiprocessing
from multiprocessing.context import BaseContext
from typing import Callable, List, Optional, TypeVar

import numpy as np

from .errors import DataError, UnreadableImageError

logger = logging.getLogger(__name__)

Sample = TypeVar("Sample")
# More unreadable images in a row than this points at a wrong image root rather than at a few bad files.
MAX_CONSECUTIVE_UNREADABLE = 64


class CorruptImageSkipper:
    """Replaces unreadable samples by the next readable index; what it skipped is shared by DataLoader workers."""

    def __init__(self, records: List[dict], context: Optional[BaseContext] = None):
        self.records = records
        # Shared memory: DataLoader workers write these, the main process reads them for the final count. Made in the
        # workers' multiprocessing context (default: the platform's): a lock made for fork cannot go to spawned workers.
        context = context or multiprocessing.get_context()
        self._unreadable = context.RawArray(ctypes.c_uint8, max(len(records), 1))  # one flag per record
        self._replaced = context.Value(ctypes.c_int64, 0)  # samples served by a replacement

    def fetch(self, index: int, load: Callable[[int], Sample]) -> Sample:
        """load(index), or load(j) for the first index j after it (wrapping around) whose image reads."""
        tries = min(len(self.records), MAX_CONSECUTIVE_UNREADABLE)
        for offset in range(tries):
            candidate = (index + offset) % len(self.records)
            if self._unreadable[candidate]:
                continue
            try:
                sample = load(candidate)
            except UnreadableImageError as err:
                self._mark_unreadable(candidate, err)
                continue
            if offset:
                with self._replaced.get_lock():
                    self._replaced.value += 1
            return sample
        raise DataError(
            f"DATALOADER.SKIP_CORRUPT: {tries} images in a row from {self._name(index)} on cannot be read; "
            "is the image root right? tools/check_dataset.py lists every unreadable image"
        )

    def _mark_unreadable(self, index: int, error: UnreadableImageError) -> None:
        if not self._unreadable[index]:
            self._unreadable[index] = 1
            logger.warning("DATALOADER.SKIP_CORRUPT: skipping an unreadable image: %s", error)

    def _name(self, index: int) -> str:
        return str(self.records[index].get("file_name", f"record {index}"))

    def unreadable_files(self) -> List[str]:
        """The images found unreadable so far (in every worker), in dataset order."""
        flags = np.frombuffer(self._unreadable, dtype=np.uint8)[:len(self.records)]
        return [self._name(int(i)) for i in np.flatnonzero(flags)]

    def replaced_samples(self) -> int:
        """How many samples were served by a replacement image."""
        return int(self._replaced.value)


def log_skipped_images(loader: object) -> int:
    """Log how many unreadable images a training loader built with DATALOADER.SKIP_CORRUPT skipped; return it.

    `loader` is the loader (or its dataset); without a skipper nothing is logged and 0 is returned.
    """
    dataset = getattr(loader, "dataset", loader)
    skipper = getattr(dataset, "skipper", None)
    if skipper is None:
        return 0
    files = skipper.unreadable_files()
    if files:
        shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        logger.warning("DATALOADER.SKIP_CORRUPT: %d unreadable images were skipped (%d samples replaced): %s",
                       len(files), skipper.replaced_samples(), shown)
    return len(files)
