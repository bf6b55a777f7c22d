"""torchvision.ops.batched_nms with its per-group NMS calls spread over threads on the CPU.

With many boxes torchvision runs one NMS per group (the RPN's (image, level) groups, the box head's classes), each
on one thread, one after the other: 20 calls and 21 ms of the toy detector's 150 ms training step on 2 cores, the
other core idle. torchvision's NMS releases the GIL, so here the groups go to a pool of torch.get_num_threads()
threads, which halves that time on 2 cores. The result is exactly torchvision's: the same per-group NMS, the same
keep mask, the same final sort by score.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Tuple

import torch
import torchvision

# torchvision's batched_nms offsets the groups' coordinates and runs one NMS up to this many box coordinates on the
# CPU (4 per box), one NMS per group beyond
_TORCHVISION_VANILLA_ABOVE = 4000

_pool: Optional[Tuple[int, int, ThreadPoolExecutor]] = None  # (process id, workers, pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The pool of this process with `workers` threads (a forked child gets its own: the parent's threads are not
    in it)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
        if _pool is not None and _pool[0] == os.getpid():  # the thread count changed: the old pool's threads end
            _pool[2].shutdown(wait=False)
        _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="resdet-nms"))
    return _pool[2]


def threaded_nms_applies(boxes: torch.Tensor) -> bool:
    """Whether batched_nms spreads the groups over threads: eager CPU, more than one thread, and enough boxes that
    torchvision would run one NMS per group."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return (boxes.device.type == "cpu" and torch.get_num_threads() > 1
            and boxes.numel() > _TORCHVISION_VANILLA_ABOVE)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms(boxes (N, 4), scores (N,), groups (N,) int, iou_threshold): the kept indices by
    decreasing score; the groups' NMS calls in parallel threads where threaded_nms_applies."""
    if not threaded_nms_applies(boxes):
        return torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)
    order = torch.argsort(groups, stable=True)  # each group's indices, ascending, one group after the other
    members = torch.split(order, torch.bincount(groups).tolist())

    # the largest groups first, so that no thread is left with a large one at the end
    by_size = sorted((m for m in members if len(m)), key=len, reverse=True)
    # the groups gathered here: only the NMS kernel runs in the workers (with the gathering there too, the toy
    # detector's training step took 187 ms instead of 149)
    inputs = [(boxes[m], scores[m]) for m in by_size]
    kept = list(_executor(torch.get_num_threads()).map(lambda bs: torchvision.ops.nms(*bs, iou_threshold), inputs))
    keep = torch.zeros_like(groups, dtype=torch.bool)
    if kept:
        keep[torch.cat([m[k] for m, k in zip(by_size, kept)])] = True
    keep_indices = torch.where(keep)[0]
    return keep_indices[scores[keep_indices].sort(descending=True)[1]]  # as torchvision's per-group strategy ends
