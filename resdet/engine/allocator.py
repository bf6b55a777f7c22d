"""Keep freed activation memory in the process heap, so that a training step on the CPU does not map it afresh.

glibc's malloc serves every block above its mmap threshold (which adapts, but never beyond 32 MB) with a fresh
mmap and unmaps it when freed. The large activations and gradients of a step (a ResNet-50 at batch 16 has dozens
of 51 MB ones) are therefore mapped again every step, and the kernel zero-fills each of their pages on first
touch: up to 360k page faults and 0.6 s of system time in a 1.2-1.5 s step on the development machine. With the
thresholds raised, freed blocks stay in the heap and the next step reuses them (what tcmalloc or jemalloc would
do), at the cost of keeping the step's peak memory mapped between steps.
"""
import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3
DISABLE_VARIABLE = "RESDET_KEEP_FREED_MEMORY"
LARGEST_BLOCK = 1 << 30  # bytes


def keep_freed_memory(largest_block: int = LARGEST_BLOCK) -> bool:
    """Raise glibc's mmap and trim thresholds so that freed blocks up to `largest_block` bytes are reused, not
    unmapped; False (and nothing changed) where the C library is not glibc or RESDET_KEEP_FREED_MEMORY=0."""
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    if not 0 < largest_block < 1 << 31:
        raise ValueError(f"keep_freed_memory: largest_block must be a positive C int, got {largest_block}")
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # the trim threshold too: at its default (128 kB) free space at the heap's top would go back to the kernel as
    # soon as a large block there is freed, and be mapped afresh on the next step
    applied = mallopt(_M_TRIM_THRESHOLD, largest_block) == 1 and mallopt(_M_MMAP_THRESHOLD, largest_block) == 1
    if not applied:
        logger.warning("mallopt refused the thresholds (%d bytes): freed memory is unmapped as before", largest_block)
    return applied


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim), e.g. after parsing a large json, whose
    objects are freed but whose pages glibc would keep, and before forking loader workers; False where not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).malloc_trim(0))
