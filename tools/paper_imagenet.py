"""The paper's ImageNet findings in miniature (Fig. 4, Table 2, Table 3); tools/paper_experiments.py runs them.

Every run trains one network of configs/toy_imagenet/ on the ImageNet-format shapes set
(tools/make_toy_data.py --imagenet, read as imagenet_train / imagenet_val) with the paper's recipe and its
schedule compressed to --iters iterations: lr / 10 at 50% and 75% (the paper divides at plateaus), after a
linear warmup over the first WARMUP_FRACTION of the run, the same for every network. Along the run it records
the training error of each batch (train mode, augmented crops: the paper's thin curves) and, --eval-points
times, the centre-crop validation error on --curve-images validation images (the bold curves). At the end it
measures top-1 and top-5 error on the whole validation set with 10 crops (Tables 2 and 3) and the centre crop.
A run whose DIR/<run>/errors.json records the same --iters, --seed and overrides is reused, so table3 after fig4 trains
only the two networks fig4 did not.
"""
import argparse
import json
import logging
import os
import time
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from resdet import build_model
from resdet.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_classification_test_loader,
    build_classification_train_loader,
)
from resdet.data.errors import DataError
from resdet.engine import ClassificationLoss, default_setup, setup_config
from resdet.engine.train_loop import run_training
from resdet.engine.trainer import HookBase
from resdet.errors import UsageError
from resdet.evaluation import ClassificationEvaluator, classification_inference
from resdet.utils.plots import metric_series, plot_plain_vs_residual, read_json_lines

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "toy_imagenet")
FIG4_RUNS = ("plain18", "plain34", "resnet18", "resnet34")
TABLE3_RUNS = ("plain34", "resnet34", "resnet34_B", "resnet34_C")
LABELS = {"plain18": "plain-18", "plain34": "plain-34", "resnet18": "ResNet-18", "resnet34": "ResNet-34 A",
          "resnet34_B": "ResNet-34 B", "resnet34_C": "ResNet-34 C"}
# The paper's ImageNet validation errors (%): Table 2 (top-1, 10-crop) and Table 3 (top-1 / top-5, 10-crop).
PAPER_TABLE2 = {"plain18": 27.94, "plain34": 28.54, "resnet18": 27.88, "resnet34": 25.03}
PAPER_TABLE3 = {"plain34": (28.54, 10.02), "resnet34": (25.03, 7.76), "resnet34_B": (24.52, 7.46),
                "resnet34_C": (24.19, 7.40)}
# The budget: 90 minutes on 2 cores for the six networks. At batch 64 with bf16, 2 threads and a loader worker an
# iteration takes about 0.3 s for the 18-layer nets and 0.5-0.6 s for the 34-layer ones, so 1800 iterations (4.4
# epochs of the 26k images) took 87.5 minutes for all six, curves and final evaluations included (README, "The paper
# in miniature": seed 0, a 2-core machine at 150 GFLOP/s of fp32 3x3 conv).
DEFAULT_ITERS = 1800
WARMUP_FRACTION = 0.05
WARMUP_START = 0.1  # of BASE_LR
TRAIN, VAL, VAL_CURVE = "imagenet_train", "imagenet_val", "imagenet_val_curve"

logger = logging.getLogger("resdet.paper_experiments")


def register_val_curve(curve_images: int) -> None:
    """VAL_CURVE: `curve_images` validation images spread evenly over the (class-sorted) validation set."""
    def load():
        records = DatasetCatalog.get(VAL)
        step = max(1, len(records) // curve_images)
        return records[::step][:curve_images]

    DatasetCatalog.remove(VAL_CURVE)
    DatasetCatalog.register(VAL_CURVE, load)
    MetadataCatalog.get(VAL_CURVE).set(evaluator_type="classification")


def check_data() -> None:
    """A UsageError that says how to write the set when imagenet_train or imagenet_val is missing."""
    for name in (TRAIN, VAL):
        try:
            DatasetCatalog.get(name)
        except DataError as err:  # the catalog's own error names the folder (or the empty one)
            raise UsageError(f"{err}\nwrite the ImageNet-format shapes set with python tools/make_toy_data.py "
                             "--imagenet (into $RESDET_DATASETS/imagenet)") from None


class BatchErrorLoss(ClassificationLoss):
    """The classifiers' cross-entropy, also keeping the batch's top-1 error (%) for BatchErrorHook."""

    last_error = None

    def __call__(self, model: torch.nn.Module, batch) -> Dict[str, torch.Tensor]:
        images, labels = batch
        labels = labels.to(self.device)
        logits = model(images.to(self.device).contiguous(memory_format=self.memory_format))  # (N, C)
        self.last_error = 100.0 * float((logits.argmax(dim=1) != labels).float().mean())
        return {"loss_cls": F.cross_entropy(logits.float(), labels)}


class BatchErrorHook(HookBase):
    """Puts the loss's batch error into the metrics as `train_err` (the writers report a 20-batch median)."""

    def __init__(self, loss: BatchErrorLoss):
        self.loss = loss

    def after_step(self) -> None:
        self.trainer.storage.put_scalar("train_err", self.loss.last_error)


def compressed_schedule(args: argparse.Namespace, run: str, warmup_iters: int) -> List[str]:
    """Overrides shared by every paper run: --iters iterations with lr / 10 at 50% and 75% after a linear warmup of
    `warmup_iters` from WARMUP_START, --eval-points curve measurements, one checkpoint at the end, --seed, DIR/<run>."""
    period = max(1, args.iters // args.eval_points)
    first_step = max(1, args.iters // 2)
    steps = (first_step, max(first_step + 1, args.iters * 3 // 4))  # increasing, even on a few-iteration check
    return ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", str(steps), "SOLVER.WARMUP_ITERS", str(warmup_iters),
            "SOLVER.WARMUP_METHOD", "linear", "SOLVER.WARMUP_FACTOR", str(WARMUP_START),
            "TEST.EVAL_PERIOD", str(period), "SOLVER.CHECKPOINT_PERIOD", str(args.iters), "SEED", str(args.seed),
            "OUTPUT_DIR", os.path.join(args.output, run)]


def validation_errors(cfg, model: torch.nn.Module, dataset: str, mode: str) -> Dict[str, float]:
    """{"top1_err", "top5_err"} (%) of the model on `dataset` with TEST.CLS_MODE `mode`."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.CLS_MODE = mode
    result = classification_inference(model, build_classification_test_loader(cfg, dataset),
                                      ClassificationEvaluator(), mode)
    return {"top1_err": 100.0 - result["top1"], "top5_err": 100.0 - result["top5"]}


def train_run(args: argparse.Namespace, run: str) -> Dict[str, object]:
    """Train one network (or reuse its finished run); return DIR/<run>/errors.json's content."""
    run_dir = os.path.join(args.output, run)
    errors_file = os.path.join(run_dir, "errors.json")
    if os.path.isfile(errors_file):
        with open(errors_file) as f:
            done = json.load(f)
        if done.get("iters") == args.iters and done.get("seed") == args.seed and done.get("opts") == args.opts:
            logger.info("%s: reusing %s", run, errors_file)
            return done
    opts = [*compressed_schedule(args, run, round(args.iters * WARMUP_FRACTION)), *args.opts]
    setup_args = argparse.Namespace(config=os.path.join(CONFIG_DIR, f"{run}.yaml"), opts=opts, eval_only=False)
    cfg = setup_config(setup_args)
    default_setup(cfg, setup_args)
    model = build_model(cfg)
    loss = BatchErrorLoss(next(model.parameters()).device, cfg.SOLVER.CHANNELS_LAST)
    start = time.perf_counter()
    run_training(cfg, False, model, build_classification_train_loader(cfg), loss,
                 lambda m: {"val_err": validation_errors(cfg, m, VAL_CURVE, "center")["top1_err"]},
                 extra_hooks=[BatchErrorHook(loss)])
    train_seconds = time.perf_counter() - start
    result = {"ten_crop": validation_errors(cfg, model, VAL, "ten_crop"),
              "center": validation_errors(cfg, model, VAL, "center"),
              "iters": args.iters, "seed": args.seed, "opts": args.opts, "train_seconds": train_seconds,
              "seconds": time.perf_counter() - start}
    logger.info("%s: %d iterations in %.0fs; validation top-1 error %.2f%% (10-crop), %.2f%% (centre crop)", run,
                args.iters, result["seconds"], result["ten_crop"]["top1_err"], result["center"]["top1_err"])
    with open(errors_file, "w") as f:
        json.dump(result, f, indent=1)
    return result


def error_curves(run_dir: str) -> Dict[str, tuple]:
    """{"train_err": (iterations, %), "val_err": ...} from a run's metrics.json."""
    rows = read_json_lines(os.path.join(run_dir, "metrics.json"))
    return {key: metric_series(rows, key) for key in ("train_err", "val_err")}


def markdown_table(results: Dict[str, dict], paper: Dict[str, Sequence[float]], top5: bool) -> str:
    """The table the tool prints and the README shows: ours beside the paper's."""
    head = ("| model | top-1 err 10-crop | top-5 err 10-crop | top-1 err centre | paper top-1 | paper top-5 |"
            if top5 else "| model | top-1 err 10-crop | top-1 err centre | paper top-1 (10-crop) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run, result in results.items():
        ten, centre = result["ten_crop"], result["center"]
        if top5:
            lines.append(f"| {LABELS[run]} | {ten['top1_err']:.2f} | {ten['top5_err']:.2f} | {centre['top1_err']:.2f} "
                         f"| {paper[run][0]:.2f} | {paper[run][1]:.2f} |")
        else:
            lines.append(f"| {LABELS[run]} | {ten['top1_err']:.2f} | {centre['top1_err']:.2f} | {paper[run]:.2f} |")
    return "\n".join(lines)


def run_experiment(args: argparse.Namespace) -> Dict[str, dict]:
    """fig4 or table3: train (or reuse) its runs; write <figure>.json (and fig4.png) and print its table."""
    check_data()
    register_val_curve(args.curve_images)
    runs = FIG4_RUNS if args.figure == "fig4" else TABLE3_RUNS
    results = {run: train_run(args, run) for run in runs}
    with open(os.path.join(args.output, f"{args.figure}.json"), "w") as f:
        json.dump(results, f, indent=1)
    if args.figure == "fig4":
        curves = {run: error_curves(os.path.join(args.output, run)) for run in runs}
        plot_plain_vs_residual({run: (c["train_err"], c["val_err"]) for run, c in curves.items()}, LABELS, "34", "val",
                               os.path.join(args.output, "fig4.png"))
        print(markdown_table(results, PAPER_TABLE2, top5=False))
    else:
        print(markdown_table(results, PAPER_TABLE3, top5=True))
    return results
