#!/usr/bin/env python
"""Speed and peak memory of a config's model, optionally against torchvision's model of the same architecture
with the same weights, timed interleaved (one run of each in turn) in one process.

    python tools/benchmark.py --config configs/torchvision/frcnn_r50_fpn.yaml --task infer --compare torchvision
    python tools/benchmark.py --config configs/r50_imagenet.yaml --task train --batch 16 --compare torchvision
    python tools/benchmark.py --config configs/toy_frcnn_r18_fpn.yaml --task data --workers 0,2,4 --json
    python tools/benchmark.py --config configs/toy_frcnn_r18_fpn.yaml --task eval --iters 20 --amp
    python tools/benchmark.py --config configs/coco_frcnn_r50_fpn.yaml --task eval --coco-images 5000 --iters 3
    python tools/benchmark.py --config configs/torchvision/frcnn_r50_fpn.yaml --task infer --compare torchvision \
        --compare onnxruntime
    python tools/benchmark.py --suite acceptance --when-quiet     # the headline ratios against torchvision

Tasks; times are medians over --iters runs after --warmup runs:
  infer  eval-mode forward of --batch (default 1) synthetic images: a detector's at INPUT.MIN/MAX_SIZE_TEST with
         width = --aspect times height, a classifier's at INPUT.CROP.SIZE
  train  one SGD step (lr 0, so that every step does the same work) on --batch (default SOLVER.IMS_PER_BATCH) synthetic
         images at the largest training size, a detector's with 5 synthetic boxes per image
  data   the training loader on DATASETS.TRAIN, per --workers count in a fresh process (or job of --num-gpus
         processes): seconds to load the records and to the first batch, images/s, and the process tree's
         PSS (the processes and their loader workers) after the first batch and after --images images
         (tools/data_loading_timing.py); --iters and --warmup do not apply
  eval   inference over the DATASETS.TEST[0] loader (the first --iters batches), the loading not timed; with
         --coco-images N instead COCO box evaluation alone (no model) of a synthetic COCO-like set of N images
         (80 categories, 7.3 objects per image, 1% crowds) and --detections per image, with each COCO API backend
         installed (pycocotools, faster_coco_eval: TEST.COCO_EVAL_BACKEND) on the same detections, in turn; an
         iteration is one whole evaluation (loadRes, evaluate, accumulate, summarize); --iters 1 --warmup 0 by default
A detector without MODEL.WEIGHTS first gets its FrozenBN statistics calibrated on one forward of the synthetic
image, so that its RPN keeps as many proposals as a trained one does ("proposals" in the output).

--compare torchvision builds torchvision.models.resnet{depth} for a Classifier, and for a FasterRCNN with a ResNet
FPN backbone torchvision's FasterRCNN as fasterrcnn_resnet50_fpn builds it for pretrained weights (FrozenBN,
stages up to FREEZE_AT frozen) with the config's depth, sizes and thresholds; it loads the resdet model's weights
(the stride moved to the 1x1 convs when STRIDE_IN_1X1) and gets the same inputs. --amp runs both under autocast
(bf16 on the CPU, fp16 with loss scaling on CUDA). Memory: peak RSS on the CPU (resdet's read before
torchvision's model exists, so the process peak is reported apart), torch.cuda.max_memory_allocated on CUDA.
On the CPU the process keeps freed blocks in its heap as the training and evaluation tools do
(resdet.engine.allocator; "keep_freed_memory" in the output, RESDET_KEEP_FREED_MEMORY=0 to time glibc's default),
for every model it times.

--suite acceptance runs the fixed comparison against torchvision described in tools/benchmark_suites.py and prints
one JSON line; --when-quiet (any task) first waits until the machine's 1-minute load average is below 0.5.

--compare onnxruntime (infer only, fp32; needs resdet[export]) exports the resdet model to ONNX as
tools/export_model.py does and runs it in onnxruntime on as many threads ("onnxruntime", and "onnxruntime_ratio" =
onnxruntime time / resdet's); the detector's graph gets the synthetic image as it is (already at the test size).
"""
import argparse
import contextlib
import itertools
import json
import logging
import os
import resource
import statistics
import sys
import time
from typing import Callable, Iterable, List, Optional

import torch
import torchvision
from torch import nn

from resdet import build_model
from resdet.config import ConfigError, setup_cfg
from resdet.data import (
    build_classification_test_loader,
    build_detection_test_loader,
)
from resdet.engine.allocator import keep_freed_memory
from resdet.errors import UsageError
from resdet.evaluation.classification import predict_scores
from resdet.evaluation.coco_backends import COCO_EVAL_BACKENDS
from resdet.utils.cli import ToolArgumentParser, run_tool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling module below, also under runpy
from benchmark_suites import acceptance, wait_until_quiet  # noqa: E402
from coco_eval_timing import coco_evaluation  # noqa: E402
from data_loading_timing import add_data_arguments, check_data_arguments, data_task, describe_rows  # noqa: E402
from torchvision_reference import torchvision_classifier, torchvision_detector  # noqa: E402

TASKS = ("train", "infer", "data", "eval")
COMPARISONS = ("torchvision", "onnxruntime")
SUITES = ("acceptance",)  # tools/benchmark_suites.py
DEFAULT_ITERS = {"infer": 10, "train": 5, "data": 0, "eval": None, "coco": 1}  # eval: the whole test set
DEFAULT_WARMUP = {"infer": 2, "train": 1, "data": 0, "eval": 1, "coco": 0}  # coco: eval --coco-images
BOXES_PER_IMAGE = 5
DETECTIONS_PER_IMAGE = 100  # --coco-images: COCOeval's maxDets


def is_detector(cfg) -> bool:
    """The config builds a detector (list-of-dicts batches) rather than a Classifier."""
    return cfg.MODEL.META_ARCHITECTURE != "Classifier"


def image_size(cfg, train: bool, aspect: float) -> tuple:
    """(height, width) of the synthetic images: a classifier's crop; a detector's (largest) shorter side with
    width = aspect * height, both scaled down to fit the longer-side limit."""
    if not is_detector(cfg):
        return cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SIZE
    short = max(cfg.INPUT.MIN_SIZE_TRAIN) if train else cfg.INPUT.MIN_SIZE_TEST
    limit = cfg.INPUT.MAX_SIZE_TRAIN if train else cfg.INPUT.MAX_SIZE_TEST
    scale = min(1.0, limit / max(short, short * aspect)) if limit else 1.0
    return round(short * scale), round(short * aspect * scale)


def synthetic_images(count: int, size: tuple, device: torch.device) -> torch.Tensor:
    """(count, 3, H, W) in 0-255: blurred noise, image-like rather than white noise."""
    noise = torch.rand(count, 3, *size, generator=torch.Generator().manual_seed(1))
    images = nn.functional.avg_pool2d(noise, 9, 1, 4, count_include_pad=False)
    low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
    return ((images - low) / (high - low) * 255).to(device)


def synthetic_targets(count: int, size: tuple, num_classes: int, device: torch.device) -> tuple:
    """Per image (BOXES_PER_IMAGE, 4) x1y1x2y2 boxes spanning 10-50% of each side, and labels in 0..C-1."""
    generator = torch.Generator().manual_seed(2)
    extent = torch.tensor([size[1], size[0]], dtype=torch.float32)  # (w, h)
    sides = (0.1 + 0.4 * torch.rand(count, BOXES_PER_IMAGE, 2, generator=generator)) * extent
    corners = torch.rand(count, BOXES_PER_IMAGE, 2, generator=generator) * (extent - sides)
    boxes = torch.cat([corners, corners + sides], dim=2).to(device)  # (N, K, 4)
    labels = torch.randint(0, num_classes, (count, BOXES_PER_IMAGE), generator=generator).to(device)
    return list(boxes), list(labels)


def calibrate_frozen_norms(model: nn.Module, run: Callable[[], object]) -> bool:
    """Set each FrozenBatchNorm2d's statistics to those of its input during one run(), in forward order (so every
    layer sees normalised inputs, as in a trained network); False when the model has none."""
    def take_statistics(module, inputs):
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)) + module.eps)

    norms = [m for m in model.modules() if isinstance(m, torchvision.ops.FrozenBatchNorm2d)]
    handles = [m.register_forward_pre_hook(take_statistics) for m in norms]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return bool(norms)


def count_proposals(rpn: nn.Module, run: Callable[[], object]) -> int:
    """Proposals the RPN module (resdet's Proposals or torchvision's list of boxes) returns in one run(), all images."""
    counts = []

    def record(module, inputs, output):
        proposals = output[0]
        counts.append(len(proposals.boxes) if hasattr(proposals, "boxes") else sum(len(p) for p in proposals))
    handle = rpn.register_forward_hook(record)
    try:
        with torch.inference_mode():
            run()
    finally:
        handle.remove()
    return counts[-1]


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on the CPU, fp16 on CUDA (the trainer's choice), or nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


class Measured:
    """One model under test: `step(inputs)` runs one iteration and returns its number of images."""

    def __init__(self, step: Callable[[object], int], device: torch.device):
        self.step, self.device = step, device
        self.times: List[float] = []
        self.images = 0
        self.peak_mem_mb: Optional[float] = None

    def run(self, inputs, timed: bool) -> None:
        """One iteration, timed (and its images counted) after the warmup."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        images = self.step(inputs)
        if cuda:
            torch.cuda.synchronize(self.device)
            self.peak_mem_mb = max(self.peak_mem_mb or 0.0, torch.cuda.max_memory_allocated(self.device) / 2**20)
        if timed:
            self.times.append(time.perf_counter() - start)
            self.images += images

    def summary(self) -> dict:
        """Median and fastest seconds per iteration, images per second, peak memory (MiB)."""
        if not self.times:
            raise UsageError("benchmark: nothing was timed; raise --iters or lower --warmup (or the test set is empty)")
        return {"time_s": statistics.median(self.times), "min_s": min(self.times),
                "images_per_s": self.images / sum(self.times), "peak_mem_mb": self.peak_mem_mb}


def peak_rss_mb() -> float:
    """High-water resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inference_step(cfg, model: nn.Module, tv: bool, device: torch.device, amp: bool) -> Callable[[object], int]:
    """One eval-mode forward of a batch: a Classifier's images (N,3,H,W), or a detector's list of dicts (which
    torchvision's model gets as 0-1 images)."""
    def step(batch) -> int:
        with torch.inference_mode(), autocast(device, amp):
            if not is_detector(cfg):
                images = batch[0]  # (images, labels); a test loader's are shaped by TEST.CLS_MODE
                plain = torch.is_tensor(images) and images.dim() == 4
                predict_scores(model, images, "center" if plain else cfg.TEST.CLS_MODE, device)
                return len(images) if torch.is_tensor(images) else 1
            items = [dict(item, image=item["image"].to(device)) for item in batch]
            model([item["image"] / 255 for item in items] if tv else items)
            return len(items)
    return step


def training_step(cfg, model: nn.Module, tv: bool, device: torch.device, amp: bool) -> Callable[[object], int]:
    """One SGD update (lr 0) on a synthetic batch: (images, labels) for a Classifier, a list of dicts otherwise."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0,
                                momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def loss(batch) -> torch.Tensor:
        if not is_detector(cfg):
            images, labels = batch
            return nn.functional.cross_entropy(model(images).float(), labels)
        if not tv:
            return sum(model(batch).values())
        targets = [{"boxes": item["boxes"], "labels": item["labels"] + 1} for item in batch]  # 0: background
        return sum(model([item["image"] / 255 for item in batch], targets).values())

    def step(batch) -> int:
        with autocast(device, amp):
            value = loss(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        return len(batch[0]) if not is_detector(cfg) else len(batch)
    return step


def synthetic_batch(cfg, args, device: torch.device, train: bool) -> tuple:
    """The fixed batch of the infer / train tasks, and its description."""
    size = image_size(cfg, train, args.aspect)
    count = args.batch or (cfg.SOLVER.IMS_PER_BATCH if train else 1)
    images = synthetic_images(count, size, device)
    info = {"batch_size": count, "input_size": list(size)}
    if not is_detector(cfg):
        labels = torch.randint(0, cfg.MODEL.CLASSIFIER.NUM_CLASSES, (count,), device=device)
        return (images, labels), info
    batch = [{"image": image, "height": size[0], "width": size[1]} for image in images]
    if train:
        boxes, labels = synthetic_targets(count, size, cfg.MODEL.ROI_HEADS.NUM_CLASSES, device)
        batch = [dict(item, boxes=b, labels=c) for item, b, c in zip(batch, boxes, labels)]
    return batch, info


def measure(steps: List[Measured], inputs: Iterable) -> None:
    """Timed runs, interleaved: every input batch goes to each step in turn."""
    for batch in inputs:
        for measured in steps:
            measured.run(batch, timed=True)


def reference_model(cfg, model: nn.Module, train_size: Optional[tuple]) -> nn.Module:
    """torchvision's model with the resdet model's weights; a detector resizes to train_size (when training) or to
    INPUT.MIN/MAX_SIZE_TEST, as resdet's does."""
    if not is_detector(cfg):
        return torchvision_classifier(cfg, model).to(next(model.parameters()).device)
    if train_size:
        return torchvision_detector(cfg, model, min(train_size), max(train_size))
    return torchvision_detector(cfg, model, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)


def task_inputs(cfg, args, device: torch.device) -> tuple:
    """(first batch, the timed batches, their description): --iters copies of the synthetic batch, or for eval the
    test loader's first --iters batches (all without --iters)."""
    iters = args.iters if args.iters is not None else DEFAULT_ITERS[args.task]
    if args.task != "eval":
        batch, info = synthetic_batch(cfg, args, device, args.task == "train")
        return batch, [batch] * iters, info
    name = cfg.DATASETS.TEST[0]
    loader = (build_detection_test_loader if is_detector(cfg) else build_classification_test_loader)(cfg, name)
    batches = iter(loader)
    first = next(batches, None)
    if first is None:
        raise ConfigError(f"DATASETS.TEST: {name!r} is empty")
    timed = itertools.islice(itertools.chain([first], batches), iters)
    return first, timed, {"dataset": name, "batch_size": loader.batch_size, "input_size": None}


def benchmark(cfg, args) -> dict:
    """The measurement of args.task as the dict --json prints: the resdet model's numbers under "resdet" and,
    with --compare torchvision, the reference's under "torchvision" and "ratio" (resdet time / torchvision's);
    with --coco-images, each COCO backend's under its name and "coco_eval_speedup" (pycocotools time / faster's)."""
    kind = "coco" if args.coco_images else args.task
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP[kind]
    iters = args.iters if args.iters is not None else DEFAULT_ITERS[kind]
    result = {"task": args.task, "config": args.config, "threads": torch.get_num_threads(), "amp": args.amp,
              "iters": iters, "warmup": warmup}
    if args.coco_images:
        per_image = args.detections or DETECTIONS_PER_IMAGE
        timings = coco_evaluation(cfg.TEST.COCO_EVAL_BACKEND, args.coco_images, per_image, warmup, iters,
                                  lambda step: Measured(step, torch.device("cpu")))
        result.update(timings, peak_rss_mb=peak_rss_mb())
        return result
    if args.task == "data":
        result.update(device="cpu", **data_task(cfg, args))
        return result
    model = build_model(cfg)
    device = next(model.parameters()).device
    if device.type == "cpu":
        result["keep_freed_memory"] = keep_freed_memory()
    first, timed_inputs, info = task_inputs(cfg, args, device)
    result.update(device=str(device), **info)
    if is_detector(cfg) and not cfg.MODEL.WEIGHTS:
        calibration, _ = synthetic_batch(cfg, args, device, train=False)
        result["calibrated"] = calibrate_frozen_norms(model.eval(), lambda: model(calibration))
    train = args.task == "train"
    make_step = training_step if train else inference_step
    steps = [Measured(make_step(cfg, model.train(train), False, device, args.amp), device)]
    if args.task == "infer" and is_detector(cfg):
        result["proposals"] = {"resdet": count_proposals(model.proposal_generator, lambda: model(first))}
    for _ in range(warmup):  # resdet alone first, so that the RSS high-water mark is its own
        steps[0].run(first, timed=False)
    resdet_rss = peak_rss_mb()
    names = ["resdet", *(args.compare or [])]
    if "torchvision" in names:
        reference = reference_model(cfg, model, tuple(info["input_size"]) if train else None).train(train)
        steps.append(Measured(make_step(cfg, reference, True, device, args.amp), device))
        if "proposals" in result:
            images = [item["image"] / 255 for item in first]
            result["proposals"]["torchvision"] = count_proposals(reference.rpn, lambda: reference(images))
    if "onnxruntime" in names:
        from onnxruntime_reference import onnxruntime_session, onnxruntime_step  # the optional [export] packages

        session = onnxruntime_session(cfg, model, torch.get_num_threads())
        steps.append(Measured(onnxruntime_step(session, is_detector(cfg)), torch.device("cpu")))
    for measured in steps[1:]:
        for _ in range(warmup):
            measured.run(first, timed=False)
    measure(steps, timed_inputs)
    result.update({name: measured.summary() for name, measured in zip(names, steps)})
    if device.type == "cpu":
        result["resdet"]["peak_mem_mb"] = resdet_rss
    if "torchvision" in names:
        result["ratio"] = result["resdet"]["time_s"] / result["torchvision"]["time_s"]
    if "onnxruntime" in names:
        result["onnxruntime_ratio"] = result["onnxruntime"]["time_s"] / result["resdet"]["time_s"]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", help="config file of the model")
    parser.add_argument("--task", choices=TASKS, help="what to measure (see above)")
    parser.add_argument("--suite", choices=SUITES, help="acceptance: resdet against torchvision's R50-FPN and "
                        "ResNet-50 (inference, detector and classifier training steps, fp32 and bf16; one JSON line), "
                        "instead of --config/--task")
    parser.add_argument("--when-quiet", action="store_true", help="first wait (up to 10 minutes) until the 1-minute "
                        "load average is below 0.5, and print the load before and after")
    parser.add_argument("--compare", choices=COMPARISONS, action="append",
                        help="also measure torchvision's model or (infer only) the ONNX export in onnxruntime, "
                        "interleaved; give it twice for both")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--iters", type=int, help="timed iterations (default: infer 10, train 5, data 20 batches, "
                        "eval the whole test set)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default: infer 2, train 1, data 2, "
                        "eval 1)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch", type=int, help="images per step (default: train SOLVER.IMS_PER_BATCH, infer 1)")
    parser.add_argument("--aspect", type=float, default=4 / 3, help="detectors: width / height of the synthetic "
                        "images (default 4/3)")
    parser.add_argument("--amp", action="store_true", help="autocast: bf16 on the CPU, fp16 on CUDA")
    parser.add_argument("--coco-images", type=int, help="eval: time COCO box evaluation alone, of this many "
                        "synthetic images, with each COCO backend (see above)")
    parser.add_argument("--detections", type=int, help=f"--coco-images: detections per image (default "
                        f"{DETECTIONS_PER_IMAGE})")
    add_data_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.suite and (args.config or args.task):
        parser.error(f"--suite {args.suite} builds its own models: leave out --config and --task")
    if not args.suite and not (args.config and args.task):
        parser.error("give --config and --task (or --suite acceptance)")
    if args.compare and args.task == "data":
        parser.error("--compare torchvision measures models: use it with --task train, infer or eval")
    if "onnxruntime" in (args.compare or []) and args.task != "infer":
        parser.error("--compare onnxruntime times the exported inference graph: use it with --task infer")
    if "onnxruntime" in (args.compare or []) and (args.batch or 1) > 1:
        parser.error("--compare onnxruntime: the exported detector takes one image; leave out --batch")
    if "onnxruntime" in (args.compare or []) and args.amp:
        parser.error("--compare onnxruntime: the exported graph is fp32; leave out --amp")
    if args.coco_images is not None and args.task != "eval":
        parser.error("--coco-images times COCO evaluation: use it with --task eval")
    if args.coco_images is not None and (args.compare or args.amp):
        parser.error("--coco-images runs no model: leave out --compare and --amp")
    if args.detections is not None and args.coco_images is None:
        parser.error("--detections is the detections per image of --coco-images: give --coco-images too")
    check_data_arguments(parser, args)
    for name in ("iters", "warmup", "threads", "batch", "coco_images", "detections"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')}: {value} is out of range")
    return args


def describe(result: dict) -> str:
    """The result as a few human-readable lines."""
    if result["task"] == "data":
        return "\n".join([f"{result['config']}: training loader, {result['num_gpus']} process(es), "
                          f"{result['images']} images each"] + describe_rows(result["loader"], result["parse"]))
    lines = [f"{result['config']}: {result['task']} on {result['device']}, {result['threads']} threads"
             f"{', amp' if result['amp'] else ''}, batch {result.get('batch_size')}, size {result.get('input_size')}"]
    if "coco_eval_backend" in result:
        lines.append(f"  synthetic COCO set: {result['images']} images x {result['detections_per_image']} "
                     f"detections; TEST.COCO_EVAL_BACKEND {result['coco_eval_backend']}")
    for name in ("resdet", *COMPARISONS, *COCO_EVAL_BACKENDS):
        if name in result:
            r = result[name]
            memory = f", peak {r['peak_mem_mb']:.0f} MiB" if r.get("peak_mem_mb") else ""
            lines.append(f"  {name:16s} {r['time_s'] * 1000:9.1f} ms/iter (median), {r['min_s'] * 1000:9.1f} min, "
                         f"{r['images_per_s']:8.2f} images/s{memory}")
    for name, metrics in result.get("bbox", {}).items():
        lines.append(f"  {name} box AP: " + ", ".join(f"{key} {value:.3f}" for key, value in metrics.items()))
    if "coco_eval_speedup" in result:
        lines.append(f"  speedup pycocotools / faster_coco_eval: {result['coco_eval_speedup']:.2f}")
    if "ratio" in result:
        lines.append(f"  ratio resdet / torchvision: {result['ratio']:.3f}")
    if "onnxruntime_ratio" in result:
        lines.append(f"  ratio onnxruntime / resdet: {result['onnxruntime_ratio']:.3f}")
    if "proposals" in result:
        lines.append(f"  proposals (all images of the batch): {result['proposals']}")
    lines.append(f"  process peak RSS {result['peak_rss_mb']:.0f} MiB")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Measure and print."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.when_quiet:
        wait_until_quiet()
    if args.suite == "acceptance":
        print(json.dumps(acceptance(calibrate_frozen_norms)))
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        cfg = setup_cfg(args.config, args.opts)
        result = benchmark(cfg, args)
        print(json.dumps(result) if args.json else describe(result))
    if args.when_quiet:
        print(f"when_quiet: load after {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
