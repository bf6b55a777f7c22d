"""Start one process per device: directly (world size 1), with torch.multiprocessing.spawn, or under torchrun."""
import logging
import os
import signal
import socket
from datetime import timedelta
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import UsageError
from .signals import forwarded_signals

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
# After one spawned process ends with an error or a stop signal's status, the others get this long to end by
# themselves (after a signal they all stop at the same iteration) before they are terminated.
EXIT_GRACE_SECONDS = 10.0
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def _find_free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def under_torchrun() -> bool:
    """True when torchrun (or another env:// launcher) has set RANK, WORLD_SIZE and LOCAL_RANK."""
    return all(name in os.environ for name in _TORCHRUN_VARS)


def _set_device(local_rank: int) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)


def _run_torchrun(main_func: Callable, args: Sequence) -> None:
    _set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(_backend(), init_method="env://", timeout=DEFAULT_TIMEOUT)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _worker(local_rank: int, main_func: Callable, world_size: int, num_gpus_per_machine: int,
            machine_rank: int, dist_url: str, args: Sequence) -> None:
    """Entry point of each spawned process: join the process group, then run main_func."""
    # Its own process group, as torchrun's workers have a session of their own: a terminal's Ctrl-C reaches the
    # launcher only, which passes it on once (forwarded_signals), rather than every process twice.
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    # comm.get_local_rank reads this, as it does under torchrun.
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["LOCAL_WORLD_SIZE"] = str(num_gpus_per_machine)
    _set_device(local_rank)
    if not torch.cuda.is_available():
        # CPU processes share the machine's cores instead of each starting one thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus_per_machine))
    rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(_backend(), init_method=dist_url, world_size=world_size, rank=rank,
                            timeout=DEFAULT_TIMEOUT)
    try:
        main_func(*args)
    except KeyboardInterrupt:
        # torch's process wrapper would report a process ended by Ctrl-C as successful (status 0).
        raise SystemExit(128 + signal.SIGINT) from None
    finally:
        dist.destroy_process_group()


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Sequence = ()) -> None:
    """Run main_func(*args) in every process of the job.

    Under torchrun the process group comes from the environment. Otherwise world size 1 calls main_func
    here, and larger jobs spawn num_gpus_per_machine processes on this machine (NCCL with CUDA, else gloo:
    on a CPU-only machine `num_gpus_per_machine` is the number of gloo processes), to which this process passes
    on the SIGTERM and SIGINT it receives.
    """
    if under_torchrun():
        _run_torchrun(main_func, args)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise UsageError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices")
    if dist_url == "auto":
        if num_machines != 1:
            raise UsageError("--dist-url auto works on one machine only; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info("launching %d processes per machine (%s), dist_url %s", num_gpus_per_machine, _backend(), dist_url)
    context = mp.start_processes(_worker, nprocs=num_gpus_per_machine, daemon=False, join=False, start_method="spawn",
                                 args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url,
                                       tuple(args)))
    with forwarded_signals(context.pids()):
        while not context.join(grace_period=EXIT_GRACE_SECONDS):
            pass
