"""Train and evaluate several configs in one job of two processes (tests/tools/test_every_config.py).

    python tests/tools/every_config_driver.py JOBS.json

JOBS.json is a list of {"tool": "train_cls" | "train_det", "argv": [<that tool's command line>]}. Two ranks start
with resdet.engine.launch (spawn, gloo on the CPU), as `--num-gpus 2` starts them, and each calls the tool's own
`main` for every job in turn: the job pays for its two interpreters once instead of once per config. Each job's loader
workers start as its config says (DATALOADER.START_METHOD), and its OUTPUT_DIR receives what the tool writes.
"""
import gc
import json
import os
import sys

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")


def stop_loader_workers() -> None:
    """Stop the loader workers a job left, as the end of a tool's process does.

    The trainer holds its loader iterator in a reference cycle (its hooks point back at it), so that only the garbage
    collector frees it, and a collection may tear the iterator's queues down before the iterator's own shutdown runs:
    its worker then never gets the message to stop, and torch waits 5 s (MP_STATUS_CHECK_INTERVAL) before terminating
    it. Shutting the iterators down first takes about a second (most of it the collection).
    """
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    for obj in gc.get_objects():
        if isinstance(obj, _MultiProcessingDataLoaderIter):
            obj._shutdown_workers()
    gc.collect()


def run_jobs(jobs) -> None:
    """Every job's tool main in this rank (imported here: spawned loader workers re-import this file)."""
    sys.path.insert(0, TOOLS)
    import train_cls
    import train_det

    from resdet.engine import comm

    tools = {"train_cls": train_cls, "train_det": train_det}
    for job in jobs:
        if comm.is_main_process():
            print(f"every_config_driver: {' '.join(job['argv'][:2])}", file=sys.stderr, flush=True)
        tool = tools[job["tool"]]
        args = tool.default_argument_parser().parse_args(job["argv"])
        tool.main(args)
        if dict(zip(args.opts[0::2], args.opts[1::2])).get("DATALOADER.NUM_WORKERS") != "0":
            stop_loader_workers()


def main() -> None:
    from resdet.engine import launch

    with open(sys.argv[1]) as file:
        jobs = json.load(file)
    launch(run_jobs, 2, args=(jobs,))


if __name__ == "__main__":
    main()
