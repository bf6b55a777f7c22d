"""tools/benchmark.py --task data: the training loader's start, throughput and the memory of its process tree.

Each worker count is measured in a fresh process (started by spawn), so that one measurement's loaded records,
heap and workers do not carry into the next. Reported per count: how long the records took to load (parsed, or
mapped from the cache), the time to the first batch (records included), images/s after it, and the summed PSS
of the process tree (the training process or processes and their loader workers; resdet.utils.process_memory)
after the first batch and after --images images per process. With --num-gpus N the measured tree is a job of
N processes (gloo on the CPU), as `train_det.py --num-gpus N` starts.
"""
import argparse
import json
import multiprocessing
import os
import tempfile
import time
from typing import List

from resdet.data import DatasetCatalog, MetadataCatalog, build_classification_train_loader, build_detection_train_loader
from resdet.engine import comm
from resdet.engine.launch import launch
from resdet.utils.process_memory import tree_pss_mb

IMAGES = 8000  # images read by each process after its first batch


def _images_in(batch) -> int:
    return len(batch[0]) if isinstance(batch, tuple) else len(batch)


def _measure(cfg, images: int, tree_root: int, result_file: str) -> None:
    """Load, iterate `images` images in this process and (rank 0) write the measurement to `result_file`."""
    start = time.perf_counter()
    records = sum(len(DatasetCatalog.get_records(name)) for name in cfg.DATASETS.TRAIN)  # cached in the process
    records_s = time.perf_counter() - start
    detector = cfg.MODEL.META_ARCHITECTURE == "FasterRCNN"
    loader = (build_detection_train_loader if detector else build_classification_train_loader)(cfg)
    seen = _images_in(next(loader))
    first_batch_s = time.perf_counter() - start
    comm.synchronize()
    pss_first = tree_pss_mb(tree_root)
    timed_from, timed_images = time.perf_counter(), seen
    while seen < images:
        seen += _images_in(next(loader))
    images_per_s = (seen - timed_images) / max(time.perf_counter() - timed_from, 1e-9)
    comm.synchronize()
    pss_end = tree_pss_mb(tree_root)
    if comm.is_main_process():
        with open(result_file, "w") as file:
            json.dump({"workers": cfg.DATALOADER.NUM_WORKERS, "records": records, "records_s": records_s,
                       "first_batch_s": first_batch_s, "images_per_s": images_per_s * comm.get_world_size(),
                       "images_per_process": seen, "pss_first_mb": pss_first, "pss_end_mb": pss_end}, file)
    comm.synchronize()


def _job(cfg, images: int, num_gpus: int, result_file: str) -> None:
    """One measured job: this process (num_gpus 1) or the processes it launches, with their workers."""
    launch(_measure, num_gpus, args=(cfg, images, os.getpid(), result_file))


def data_loading(cfg, worker_counts: List[int], images: int, num_gpus: int = 1) -> List[dict]:
    """One measurement (see the module's docstring) per worker count, each in a fresh spawned process."""
    rows = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        for workers in worker_counts:
            job_cfg = cfg.clone()
            job_cfg.defrost()
            job_cfg.DATALOADER.NUM_WORKERS = workers
            job_cfg.freeze()
            result_file = os.path.join(folder, f"{workers}.json")
            process = context.Process(target=_job, args=(job_cfg, images, num_gpus, result_file))
            process.start()
            process.join()
            if process.exitcode != 0:
                raise RuntimeError(f"benchmark --task data: the measurement with {workers} workers failed "
                                   f"(exit status {process.exitcode}); see its output above")
            with open(result_file) as file:
                rows.append(json.load(file))
    return rows


def _parse_job(json_file: str, name: str, cache_dir: str, result_file: str) -> None:
    """Time json.load of `json_file`, then the records of dataset `name` from the cache in `cache_dir`."""
    os.environ["RESDET_CACHE"] = cache_dir
    start = time.perf_counter()
    with open(json_file, "rb") as file:
        json.load(file)
    json_load_s = time.perf_counter() - start
    start = time.perf_counter()
    DatasetCatalog.get_records(name)
    with open(result_file, "w") as out:
        json.dump({"json_load_s": json_load_s, "records_s": time.perf_counter() - start}, out)


def parse_timing(cfg) -> List[dict]:
    """Per COCO-format dataset of DATASETS.TRAIN: json.load of its file, and its records parsed, validated and
    written to an empty cache (first start), then mapped from that cache (later starts), each in a fresh process."""
    rows = []
    context = multiprocessing.get_context("spawn")
    for name in cfg.DATASETS.TRAIN:
        json_file = MetadataCatalog.get(name).get("json_file")  # paths under $RESDET_DATASETS come resolved
        if not json_file:
            continue
        with tempfile.TemporaryDirectory() as folder:
            row = {"dataset": name, "json_mb": os.path.getsize(json_file) / 2**20}
            for start in ("first", "cached"):
                result_file = os.path.join(folder, f"{start}.json")
                process = context.Process(target=_parse_job, args=(json_file, name, folder, result_file))
                process.start()
                process.join()
                if process.exitcode != 0:
                    raise RuntimeError(f"benchmark --task data: timing the records of {name} failed")
                with open(result_file) as file:
                    timing = json.load(file)
                row["json_load_s"] = row.get("json_load_s", timing["json_load_s"])
                row[f"records_{start}_s"] = timing["records_s"]
            rows.append(row)
    return rows


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """tools/benchmark.py's options of --task data."""
    parser.add_argument("--workers", help="data: comma-separated loader worker counts, each measured in a process of "
                        "its own (default: DATALOADER.NUM_WORKERS), e.g. 0,2,4")
    parser.add_argument("--images", type=int, default=IMAGES, help=f"data: images each process reads (default "
                        f"{IMAGES})")
    parser.add_argument("--num-gpus", type=int, default=1, help="data: processes of the measured job (gloo on the CPU)")
    parser.add_argument("--parse", action="store_true", help="data: also time json.load of each COCO-format training "
                        "set against its records' first (parsed, to an empty cache) and cached starts")


def check_data_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error for options of --task data given with another task, or out of range."""
    if (args.workers or args.num_gpus != 1 or args.parse) and args.task != "data":
        parser.error("--workers, --num-gpus and --parse describe the measured loader: use them with --task data")
    if args.workers and not all(w.strip().isdigit() for w in args.workers.split(",")):
        parser.error(f"--workers: expected counts like 0,2,4, got {args.workers!r}")
    if args.images < 1 or args.num_gpus < 1:
        parser.error("--images and --num-gpus must be positive")


def data_task(cfg, args: argparse.Namespace) -> dict:
    """The measurements of --task data, as benchmark.py's --json prints them."""
    workers = [int(w) for w in args.workers.split(",")] if args.workers else [cfg.DATALOADER.NUM_WORKERS]
    return {"num_gpus": args.num_gpus, "images": args.images, "parse": parse_timing(cfg) if args.parse else [],
            "loader": data_loading(cfg, workers, args.images, args.num_gpus)}


def describe_rows(rows: List[dict], parse_rows: List[dict]) -> List[str]:
    """The measurements as table lines."""
    lines = [f"  {r['dataset']}: json.load of {r['json_mb']:.0f} MiB {r['json_load_s']:.2f} s; records parsed, "
             f"validated and cached {r['records_first_s']:.2f} s ({r['records_first_s'] / r['json_load_s']:.2f}x), "
             f"mapped from the cache {r['records_cached_s']:.3f} s" for r in parse_rows]
    lines += ["  workers  records s  first batch s  images/s  PSS first MiB  PSS after N MiB  (N images/process)"]
    lines.extend(f"  {r['workers']:7d}  {r['records_s']:9.2f}  {r['first_batch_s']:13.2f}  {r['images_per_s']:8.1f}"
                 f"  {r['pss_first_mb']:13.0f}  {r['pss_end_mb']:15.0f}  ({r['images_per_process']})" for r in rows)
    return lines
