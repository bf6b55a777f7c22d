"""Distributed helpers that also work in a single process (world size 1, no process group)."""
import os
from typing import Any, Dict, List

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    """True when a process group has been initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine; `launch` and torchrun both set LOCAL_RANK."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main_process() -> bool:
    """True on global rank 0, the process that writes files and logs to the console."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op in a single process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL:
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather(obj: Any) -> List[Any]:
    """Picklable objects from every rank, in rank order (works on gloo and NCCL)."""
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def gather(obj: Any, dst: int = 0) -> List[Any]:
    """Picklable objects from every rank, in rank order, on rank `dst` only (the others get []): unlike
    all_gather, no other rank receives, and holds, every rank's data."""
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered if gathered is not None else []


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value` (the same answer on every rank): how ranks agree on a flag."""
    if get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == dist.Backend.NCCL else "cpu"
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def reduce_loss_dict(loss_dict: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Mean over ranks of each scalar loss, as floats, identical on every rank (for logging)."""
    names = sorted(loss_dict)
    values = torch.stack([loss_dict[name].detach().float() for name in names])  # (L,)
    if get_world_size() > 1:
        dist.all_reduce(values)
        values /= get_world_size()
    return dict(zip(names, values.tolist()))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or the model itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model
