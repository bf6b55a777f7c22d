"""Start one process per device: directly (world size 1), with torch.multiprocessing.spawn, or under torchrun.

When one spawned process ends with an error, a signal or a non-zero status, the others are stopped (SIGTERM after
EXIT_GRACE_SECONDS, SIGKILL after as long again) and `launch` raises ProcessFailed naming the rank and how it ended.
"""
import logging
import os
import signal
import socket
from datetime import timedelta
from typing import Callable, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

from ..errors import UsageError
from ..utils.cpus import threads_per_process
from . import comm
from .signals import forwarded_signals

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
# After one spawned process ends with an error or a stop signal's status, the others get this long to end by
# themselves (after a signal they all stop at the same iteration) before they are terminated.
EXIT_GRACE_SECONDS = 10.0
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# With it, a NCCL collective that fails or times out (a dead peer) raises in every rank instead of hanging.
NCCL_ASYNC_ERROR_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"


class ProcessFailed(RuntimeError):
    """A process of a job started by `launch` failed; the others have been stopped."""

    def __init__(self, message: str, rank: int, exit_status: int, by_signal: Optional[str] = None):
        super().__init__(message)
        self.rank, self.exit_status, self.by_signal = rank, exit_status, by_signal
        self.stop_requested = False  # the launcher itself received SIGTERM/SIGINT and passed it on

    @property
    def shell_status(self) -> int:
        """What a shell reports for the process: 128 + the signal's number, or its exit status."""
        return 128 + signal.Signals[self.by_signal] if self.by_signal else self.exit_status


def _find_free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backend_for(device: str) -> str:
    """The process group backend for models on `device` (a device type): NCCL for CUDA, gloo otherwise."""
    return "nccl" if device == "cuda" else "gloo"


def _default_backend() -> str:
    return backend_for("cuda" if torch.cuda.is_available() else "cpu")


def under_torchrun() -> bool:
    """True when torchrun (or another env:// launcher) has set RANK, WORLD_SIZE and LOCAL_RANK."""
    return all(name in os.environ for name in _TORCHRUN_VARS)


def _prepare_process(local_rank: int, local_processes: int, backend: str) -> None:
    """The device, the CPU threads and the NCCL error handling of one process of a job."""
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        os.environ.setdefault(NCCL_ASYNC_ERROR_HANDLING, "1")
    elif "OMP_NUM_THREADS" not in os.environ:
        # CPU processes share the CPUs this job may use (affinity mask, container quota) rather than each starting
        # one thread per core of the host; OMP_NUM_THREADS, set by the user or torchrun, wins.
        torch.set_num_threads(threads_per_process(local_processes))


def _run_torchrun(main_func: Callable, args: Sequence, timeout: timedelta, backend: str) -> None:
    _prepare_process(int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", 1)), backend)
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    # torchrun's agent keeps its store across restarts: the keys of each attempt get their own prefix, or a
    # restarted job's processes would find the addresses of the processes that died and wait on them.
    store = dist.PrefixStore(f"resdet/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    _run_in_group(main_func, args)


def _run_in_group(main_func: Callable, args: Sequence) -> None:
    """main_func(*args), then leave the process group; on success only once every process is done with it."""
    try:
        main_func(*args)
        # Tearing a group down while a peer still uses it can abort the process (gloo's threads): wait for all.
        comm.synchronize()
    finally:
        dist.destroy_process_group()


def _worker(local_rank: int, main_func: Callable, world_size: int, num_gpus_per_machine: int,
            machine_rank: int, dist_url: str, timeout: timedelta, backend: str, args: Sequence) -> None:
    """Entry point of each spawned process: join the process group, then run main_func."""
    # Its own process group, as torchrun's workers have a session of their own: a terminal's Ctrl-C reaches the
    # launcher only, which passes it on once (forwarded_signals), rather than every process twice.
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    # comm.get_local_rank reads this, as it does under torchrun.
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["LOCAL_WORLD_SIZE"] = str(num_gpus_per_machine)
    _prepare_process(local_rank, num_gpus_per_machine, backend)
    rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend, init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    try:
        _run_in_group(main_func, args)
    except KeyboardInterrupt:
        # torch's process wrapper would report a process ended by Ctrl-C as successful (status 0).
        raise SystemExit(128 + signal.SIGINT) from None


def _failure(err: ProcessException, machine_rank: int, num_gpus_per_machine: int) -> ProcessFailed:
    """ProcessFailed from torch's report of the first process that failed."""
    rank = machine_rank * num_gpus_per_machine + err.error_index
    who = f"rank {rank} (pid {err.error_pid})"
    if isinstance(err, mp.ProcessRaisedException):  # main_func raised: torch passes its traceback on
        trace = err.msg.partition("with the following error:")[2] or err.msg
        return ProcessFailed(f"{who} raised an exception:{trace}", rank, 1)
    by_signal = getattr(err, "signal_name", None)
    if by_signal:
        return ProcessFailed(f"{who} was killed by {by_signal}", rank, err.exit_code, by_signal)
    return ProcessFailed(f"{who} exited with status {err.exit_code}", rank, err.exit_code)


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Sequence = (), timeout: timedelta = DEFAULT_TIMEOUT,
           backend: Optional[str] = None) -> None:
    """Run main_func(*args) in every process of the job.

    Under torchrun the process group comes from the environment. Otherwise world size 1 calls main_func
    here, and larger jobs spawn num_gpus_per_machine processes on this machine (NCCL with CUDA, else gloo:
    on a CPU-only machine `num_gpus_per_machine` is the number of gloo processes), to which this process passes
    on the SIGTERM and SIGINT it receives. `timeout` bounds every collective: a peer that stops answering fails
    the job after it. `backend`: "nccl" (one CUDA device per process) or "gloo" (CPU processes); default NCCL
    where CUDA is available. Raises ProcessFailed when a spawned process fails.
    """
    backend = backend or _default_backend()
    if under_torchrun():
        _run_torchrun(main_func, args, timeout, backend)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise UsageError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices")
    if dist_url == "auto":
        if num_machines != 1:
            raise UsageError("--dist-url auto works on one machine only; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info("launching %d processes per machine (%s), dist_url %s", num_gpus_per_machine, backend, dist_url)
    context = mp.start_processes(_worker, nprocs=num_gpus_per_machine, daemon=False, join=False, start_method="spawn",
                                 args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, timeout,
                                       backend, tuple(args)))
    received: List[int] = []
    try:
        with forwarded_signals(context.pids()) as received:
            while not context.join(grace_period=EXIT_GRACE_SECONDS):
                pass
    except ProcessException as err:
        failure = _failure(err, machine_rank, num_gpus_per_machine)
        failure.stop_requested = bool(received)
        raise failure from None
