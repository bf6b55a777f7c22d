"""What every tool shares: the command-line parser, config set-up, logging and seeding, launching."""
import argparse
import functools
import logging
import os
import random
import sys
from datetime import timedelta
from typing import Callable, List, Optional

import numpy as np
import torch

from ..config import CfgNode, ConfigError, get_cfg, validate_config
from ..errors import UsageError
from ..utils.cli import EXIT_USER_ERROR, ToolArgumentParser, debug_requested, report_user_error, run_tool
from ..utils.device import device_type
from ..utils.logger import environment_info, setup_logger
from . import allocator, comm
from .launch import ProcessFailed, backend_for, launch, under_torchrun

logger = logging.getLogger(__name__)


def default_argument_parser(description: str = None) -> argparse.ArgumentParser:
    """--config, --resume, --eval-only, the distributed options and trailing KEY VALUE overrides."""
    parser = ToolArgumentParser(
        description=description,
        epilog="Multi-machine: run the same command on every machine with --num-machines M, "
               "--machine-rank 0..M-1 and --dist-url tcp://<machine 0>:<port>. Under torchrun the "
               "distributed options are ignored and the process group comes from the environment.",
    )
    parser.add_argument("--config", "--config-file", dest="config", default="", metavar="FILE", help="config YAML")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS or the last checkpoint")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; gloo CPU processes without CUDA)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine, 0..num-machines-1")
    parser.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0; 'auto': a free local port")
    parser.add_argument("--max-restarts", type=int, default=0, metavar="N",
                        help="when a process of the job fails, restart every process up to N times; they continue "
                             "from the newest complete checkpoint (as torchrun --max-restarts does)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.BASE_LR 0.01 OUTPUT_DIR out/")
    return parser


def scale_to_world_size(cfg: CfgNode, world_size: int) -> None:
    """Linear scaling rule: with REFERENCE_WORLD_SIZE R > 0, a job on W processes multiplies
    IMS_PER_BATCH and BASE_LR by W/R and divides MAX_ITER, STEPS, WARMUP_ITERS and the checkpoint and
    eval periods by W/R, so it sees as many images per process and in total as the reference job."""
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if reference <= 0 or reference == world_size:
        return
    scale = world_size / reference
    batch = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
    if batch % world_size != 0:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH scaled to {batch} is not divisible by the world size {world_size}")
    old = (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER)
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SOLVER.BASE_LR *= scale
    cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
    cfg.SOLVER.STEPS = tuple(int(round(step / scale)) for step in cfg.SOLVER.STEPS)
    cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
    cfg.SOLVER.CHECKPOINT_PERIOD = int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale))
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    cfg.SOLVER.REFERENCE_WORLD_SIZE = world_size
    logger.info("linear scaling from %d to %d processes: IMS_PER_BATCH, BASE_LR, MAX_ITER %s -> %s",
                reference, world_size, old, (batch, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER))


def setup_config(args: argparse.Namespace, world_size: Optional[int] = None) -> CfgNode:
    """Defaults, --config, the overrides, linear scaling to the job's world size (default: this process group's),
    then validate_config (training keys unless --eval-only); frozen."""
    world_size = comm.get_world_size() if world_size is None else world_size
    cfg = get_cfg()
    if args.config:
        cfg.merge_from_file(args.config)
    cfg.merge_from_list(args.opts)
    scale_to_world_size(cfg, world_size)
    validate_config(cfg, args.config, args.opts, training=not getattr(args, "eval_only", False),
                    world_size=world_size)
    cfg.freeze()
    return cfg


def seed_all(seed: int) -> int:
    """Seed Python, NumPy and torch; a negative seed draws a random one. Returns the seed used."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def default_setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    """OUTPUT_DIR, logging (log.txt; log.txt.rank{N} on other ranks), environment and config in the log,
    OUTPUT_DIR/config.yaml (rank 0), seeding (SEED < 0: random, logged; each rank offsets it by its rank), and on the
    CPU glibc's malloc keeping freed blocks (allocator.keep_freed_memory)."""
    rank = comm.get_rank()
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, rank)
    logger.info("rank %d of %d, pid %d\n%s", rank, comm.get_world_size(), os.getpid(), environment_info())
    logger.info("command line: %s", " ".join(sys.argv))
    logger.info("config (%s):\n%s", args.config or "defaults", cfg.dump())
    if comm.is_main_process():
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        with open(path, "w") as file:
            file.write(cfg.dump())
        logger.info("config saved to %s", path)
    seed = seed_all(cfg.SEED if cfg.SEED < 0 else cfg.SEED + rank)
    logger.info("seed %d", seed)
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    if device_type(cfg.MODEL.DEVICE) == "cpu" and allocator.keep_freed_memory():
        logger.info("freed blocks up to %d MB stay in the heap (%s=0 turns this off)", allocator.LARGEST_BLOCK >> 20,
                    allocator.DISABLE_VARIABLE)


def _exit_on_user_errors(main_func: Callable, debug: bool, *args) -> None:
    """main_func(*args) in one process of the job; a user error prints its message and exits 2."""
    status = run_tool(main_func, *args, debug=debug)
    if status == EXIT_USER_ERROR:
        sys.exit(status)


def _restarted_by_torchrun() -> bool:
    return under_torchrun() and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def expected_world_size(args: argparse.Namespace) -> int:
    """The number of processes the job will have: torchrun's WORLD_SIZE, else machines x processes per machine."""
    if under_torchrun():
        return int(os.environ["WORLD_SIZE"])
    if args.num_gpus < 1 or args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise UsageError(f"--num-gpus {args.num_gpus}, --num-machines {args.num_machines}, --machine-rank "
                         f"{args.machine_rank}: need at least 1 process and 1 machine, and a rank below the machines")
    return args.num_machines * args.num_gpus


def launch_tool(main_func: Callable, args: argparse.Namespace) -> int:
    """Check the config, then launch main_func(args) per the distributed options. Returns the exit status: 0, 2
    after a user error's message (in this process or a spawned one), or that of a failed process (128 + N for signal
    N); --debug / RESDET_DEBUG=1 raise user errors instead.

    When a spawned process fails, the others are stopped and the message names the rank, how it ended and the
    checkpoint to resume from; with --max-restarts N the job then restarts up to N times, resuming from it, as it
    does when torchrun restarts it."""
    from ..checkpoint.checkpointer import resume_advice  # here: resdet.checkpoint imports this package

    debug = debug_requested()
    configs: List[CfgNode] = []
    # Fails before any process is spawned, so a bad config is reported once rather than once per process.
    status = run_tool(lambda: configs.append(setup_config(args, expected_world_size(args))), debug=debug)
    if status != 0:
        return status
    cfg = configs[0]
    if args.max_restarts < 0:
        return report_user_error(UsageError(f"--max-restarts {args.max_restarts}: give 0 or more"))
    if _restarted_by_torchrun():
        args.resume = True
        logger.warning("torchrun restart %s: continuing from the newest complete checkpoint in %s",
                       os.environ["TORCHELASTIC_RESTART_COUNT"], cfg.OUTPUT_DIR)
    if expected_world_size(args) > 1 and not under_torchrun():
        setup_logger(None, 0)  # this launcher's own messages (the processes it starts log to OUTPUT_DIR)
    wrapped = functools.partial(_exit_on_user_errors, main_func, debug)
    timeout = timedelta(seconds=cfg.DIST.TIMEOUT)
    for restart in range(args.max_restarts + 1):
        if restart:
            args.resume = True
            logger.warning("restart %d of %d: starting every process again; they continue from the newest complete "
                           "checkpoint", restart, args.max_restarts)
        try:
            return run_tool(launch, wrapped, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url,
                            (args,), timeout, backend_for(device_type(cfg.MODEL.DEVICE)), debug=debug)
        except ProcessFailed as failure:
            if failure.exit_status == EXIT_USER_ERROR or failure.stop_requested:
                return failure.shell_status  # the process printed why; a requested stop saved its checkpoint
            left = args.max_restarts - restart
            restarts = f"restarting ({left} restart{'s' if left > 1 else ''} left)" if left else "--max-restarts N " \
                "restarts a job by itself"
            report_user_error(ProcessFailed(f"{failure} and the other processes were stopped. "
                                            f"{resume_advice(cfg.OUTPUT_DIR, restarts)}", failure.rank, 0))
            if not left:
                return failure.shell_status
    return 1  # not reached: the last attempt returns
