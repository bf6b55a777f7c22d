#!/usr/bin/env python
"""The paper's experiments in miniature, on the CPU: ImageNet's degradation and shortcut options (Fig. 4 with
Table 2, Table 3) and CIFAR-10's degradation and layer responses (Fig. 6, Fig. 7).

    python tools/make_toy_data.py --imagenet                    # $RESDET_DATASETS/imagenet
    python tools/paper_experiments.py fig4 --output output/paper_imagenet
    python tools/paper_experiments.py table3 --output output/paper_imagenet
    python tools/make_toy_data.py --cifar                       # $RESDET_DATASETS/toy_cifar10
    python tools/paper_experiments.py fig6 --output output/paper
    python tools/paper_experiments.py fig7 --output output/paper

fig4 trains plain-18, plain-34, ResNet-18 and ResNet-34 (configs/toy_imagenet/, option A) and writes DIR/fig4.json
(each run's errors.json), DIR/fig4.png (thin: training error of the augmented batches, bold: centre-crop
validation error) and prints Table 2 (10-crop and centre-crop top-1 error beside the paper's). table3 trains
ResNet-34 with options B and C, reuses plain-34 and ResNet-34 A from fig4 when DIR holds them (same --iters,
--seed and overrides), writes DIR/table3.json and prints Table 3 (10-crop top-1 / top-5 error). How the runs are
trained: tools/paper_imagenet.py.

fig6 trains plain-20, plain-56, ResNet-20 and ResNet-56 (configs/cifar/) one after the other on the
CIFAR-format shapes set in --data, with the paper's recipe (SGD, lr 0.1, momentum 0.9, weight decay 1e-4,
batch 128, pad-and-crop and flip augmentation) and its step schedule compressed to --iters iterations (lr / 10
at 50% and 75%, as 32k and 48k of 64k). The lr rises linearly from 0.01 to 0.1 over the first --warmup-iters, the
same for all four (the paper warms up only ResNet-110, at a constant 0.01: on these images ResNet-56 at 0.1 from the
start, or after a constant warmup, stays at chance). During training, training and test error are measured in eval mode
on the first --curve-images images of each set, --eval-points times; at the end, on the whole of both.
Writes DIR/<run>/ (the training outputs, model_final.pth, errors.json), DIR/fig6.json
{run: {"train_err", "test_err"}} (percentages) and DIR/fig6.png (thin: training error, bold: test error).

fig7 loads DIR/<run>/model_final.pth of every run and measures, on --num-images test images, the std of each
3x3 layer's response after BN, before the addition and ReLU (tools/layer_response.py); writes DIR/fig7.json
{run: {"layers", "std"}} and DIR/fig7.png (in layer order and sorted).

Trailing KEY VALUE overrides apply to every run (e.g. MODEL.DEVICE cuda). Threads: torch's default, one per
core (OMP_NUM_THREADS limits it).
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling tool below, also under runpy
import paper_imagenet  # noqa: E402
from layer_response import dataset_batches, layer_responses  # noqa: E402

from resdet import build_model  # noqa: E402
from resdet.config import setup_cfg  # noqa: E402
from resdet.data import (  # noqa: E402
    DatasetCatalog,
    MetadataCatalog,
    build_classification_test_loader,
    build_classification_train_loader,
    datasets_root,
)
from resdet.data.datasets import toy_cifar  # noqa: E402
from resdet.data.datasets.cifar import load_cifar10, read_label_names, register_cifar10  # noqa: E402
from resdet.engine import ClassificationLoss, default_setup, setup_config  # noqa: E402
from resdet.engine.train_loop import run_training  # noqa: E402
from resdet.errors import UsageError  # noqa: E402
from resdet.evaluation import ClassificationEvaluator, classification_inference  # noqa: E402
from resdet.utils.cli import ToolArgumentParser, run_tool  # noqa: E402
from resdet.utils.plots import (  # noqa: E402
    Series,
    metric_series,
    plot_layer_responses,
    plot_plain_vs_residual,
    read_json_lines,
)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "cifar")
RUNS = ("plain20", "plain56", "resnet20", "resnet56")
LABELS = {"plain20": "plain-20", "plain56": "plain-56", "resnet20": "ResNet-20", "resnet56": "ResNet-56"}
# The 60-minute budget on 2 CPU cores: with 2 threads an iteration of batch 128 takes about 0.33 s for the
# 56-layer nets and 0.12 s for the 20-layer ones, so 2500 iterations (6.4 epochs of 50k images) of all four are
# about 38 minutes, plus about 4 for the error measurements; measured: 44.5 minutes on a shared 2-core machine.
DEFAULT_ITERS = 2500
# fig4 / table3: paper_imagenet.DEFAULT_ITERS says how it was chosen.
DEFAULTS = {"fig6": {"iters": DEFAULT_ITERS, "curve_images": 2000},
            "fig4": {"iters": paper_imagenet.DEFAULT_ITERS, "curve_images": 500}}
WARMUP_FRACTION = 0.12  # of --iters: 300 of 2500
TRAIN, TEST = "toy_cifar10_train", "toy_cifar10_test"
TRAIN_CURVE, TEST_CURVE = "toy_cifar10_train_curve", "toy_cifar10_test_curve"
ERROR_KEYS = ("train_err", "test_err")

logger = logging.getLogger("resdet.paper_experiments")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments; impossible values exit 2 with a message."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("figure", choices=("fig4", "table3", "fig6", "fig7"),
                        help="fig4 / table3: the ImageNet-format runs; fig6: train and plot CIFAR errors; fig7: "
                             "layer responses of fig6's networks")
    parser.add_argument("--output", required=True, help="directory of the runs and figures")
    parser.add_argument("--data", default=None,
                        help="fig6/fig7: folder holding cifar-10-batches-py (default: $RESDET_DATASETS/toy_cifar10); "
                             "fig4/table3 read $RESDET_DATASETS/imagenet")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="fig6/fig7: the networks, default all four")
    parser.add_argument("--iters", type=int, default=None,
                        help=f"fig6, fig4, table3: iterations of each run (default {DEFAULT_ITERS} for fig6, "
                             f"{paper_imagenet.DEFAULT_ITERS} for fig4 and table3)")
    parser.add_argument("--warmup-iters", type=int, default=None,
                        help=f"fig6: iterations of linear lr warmup (default {WARMUP_FRACTION * 100:.0f}%% of --iters)")
    parser.add_argument("--eval-points", type=int, default=10,
                        help="fig6, fig4, table3: error measurements along each curve")
    parser.add_argument("--curve-images", type=int, default=None,
                        help="fig6, fig4, table3: images of each set measured along the curves (the final errors "
                             "use all; default 2000 for fig6, 500 for fig4 and table3)")
    parser.add_argument("--num-images", type=int, default=1000, help="fig7: test images the stds average over")
    parser.add_argument("--seed", type=int, default=0, help="fig6, fig4, table3: SEED of every run")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides for every run")
    args = parser.parse_intermixed_args(argv)  # the figure name comes first, the overrides last
    defaults = DEFAULTS["fig6" if args.figure in ("fig6", "fig7") else "fig4"]
    for option, value in defaults.items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    for option in ("iters", "eval_points", "curve_images", "num_images"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive, got {getattr(args, option)}")
    if args.warmup_iters is not None and not 0 <= args.warmup_iters < args.iters:
        parser.error(f"--warmup-iters must be in [0, --iters), got {args.warmup_iters}")
    args.data = args.data or os.path.join(datasets_root(), "toy_cifar10")
    args.runs = list(dict.fromkeys(args.runs))
    return args


def register_toy_cifar(data_dir: str, curve_images: int) -> None:
    """The set's train and test splits, and the first `curve_images` of each, under this tool's dataset names."""
    folder = os.path.join(data_dir, toy_cifar.FOLDER)
    if not os.path.isfile(os.path.join(folder, "batches.meta")):
        raise UsageError(f"--data {data_dir}: no {toy_cifar.FOLDER}/batches.meta there; write the set with "
                         f"python tools/make_toy_data.py --cifar --out {data_dir}")
    for name in (TRAIN, TEST, TRAIN_CURVE, TEST_CURVE):
        DatasetCatalog.remove(name)  # a second call in one process may name another folder
    register_cifar10(TRAIN, folder, "train")
    register_cifar10(TEST, folder, "test")
    for name, split in ((TRAIN_CURVE, "train"), (TEST_CURVE, "test")):
        DatasetCatalog.register(name, lambda name=name, split=split: load_cifar10(name, folder, split)[:curve_images])
        MetadataCatalog.get(name).set(image_root=folder, evaluator_type="classification",
                                      thing_classes=read_label_names(name, folder))


def errors(cfg, model: torch.nn.Module, train_set: str, test_set: str) -> Dict[str, float]:
    """{"train_err", "test_err"}: top-1 error (%) in eval mode on the two datasets (centre crop: the image)."""
    return {key: 100.0 - classification_inference(model, build_classification_test_loader(cfg, name),
                                                  ClassificationEvaluator(), "center")["top1"]
            for key, name in zip(ERROR_KEYS, (train_set, test_set))}


def run_overrides(args: argparse.Namespace, run: str) -> List[str]:
    """This tool's datasets and the compressed schedule, then the user's overrides."""
    warmup = round(args.iters * WARMUP_FRACTION) if args.warmup_iters is None else args.warmup_iters
    return ["DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", f"('{TEST}',)", "DATALOADER.NUM_WORKERS", "0",
            *paper_imagenet.compressed_schedule(args, run, warmup), *args.opts]


def train_run(args: argparse.Namespace, run: str) -> Dict[str, float]:
    """Train one network; return and write DIR/<run>/errors.json, its final errors on the whole sets."""
    config = os.path.join(CONFIG_DIR, f"{run}.yaml")
    setup_args = argparse.Namespace(config=config, opts=run_overrides(args, run), eval_only=False)
    cfg = setup_config(setup_args)
    default_setup(cfg, setup_args)
    train_loader = build_classification_train_loader(cfg)
    model = build_model(cfg)
    start = time.perf_counter()
    run_training(cfg, False, model, train_loader, ClassificationLoss(next(model.parameters()).device),
                 lambda m: errors(cfg, m, TRAIN_CURVE, TEST_CURVE))
    seconds = time.perf_counter() - start
    final = errors(cfg, model, TRAIN, TEST)
    logger.info("%s: %d iterations in %.0fs (%.2fs each, with the curve evaluations); training error %.2f%%, "
                "test error %.2f%%", run, cfg.SOLVER.MAX_ITER, seconds, seconds / cfg.SOLVER.MAX_ITER,
                final["train_err"], final["test_err"])
    with open(os.path.join(cfg.OUTPUT_DIR, "errors.json"), "w") as f:
        json.dump({**final, "seconds": seconds}, f, indent=1)
    return final


def error_curves(run_dir: str) -> Dict[str, Series]:
    """{"train_err": (iterations, %), "test_err": ...} from a run's metrics.json evaluation rows."""
    rows = read_json_lines(os.path.join(run_dir, "metrics.json"))
    return {key: metric_series(rows, key) for key in ERROR_KEYS}


def fig6(args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    """Train every run, write fig6.json and fig6.png."""
    results = {run: train_run(args, run) for run in args.runs}
    with open(os.path.join(args.output, "fig6.json"), "w") as f:
        json.dump(results, f, indent=1)
    curves = {run: error_curves(os.path.join(args.output, run)) for run in args.runs}
    plot_plain_vs_residual({run: (c["train_err"], c["test_err"]) for run, c in curves.items()}, LABELS, "56", "test",
                           os.path.join(args.output, "fig6.png"))
    return results


def fig7(args: argparse.Namespace) -> Dict[str, dict]:
    """Layer responses of every run's model_final.pth; write fig7.json and fig7.png."""
    results = {}
    for run in args.runs:
        weights = os.path.join(args.output, run, "model_final.pth")
        if not os.path.isfile(weights):
            raise UsageError(f"{weights} does not exist: run fig6 with the same --output (and --runs) first")
        cfg = setup_cfg(os.path.join(CONFIG_DIR, f"{run}.yaml"),
                        ["DATASETS.TEST", f"('{TEST}',)", "TEST.CLS_MODE", "center", "DATALOADER.NUM_WORKERS", "0",
                         "MODEL.WEIGHTS", weights, *args.opts])
        stds = layer_responses(build_model(cfg), dataset_batches(cfg, args.num_images))
        results[run] = {"weights": weights, "num_images": args.num_images, "layers": list(stds),
                        "std": list(stds.values())}
    with open(os.path.join(args.output, "fig7.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot_layer_responses({LABELS[run]: result["std"] for run, result in results.items()},
                         os.path.join(args.output, "fig7.png"))
    return results


def main(argv: Optional[List[str]] = None) -> int:
    """Run the chosen figure and print its numbers."""
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    if args.figure in ("fig4", "table3"):
        paper_imagenet.run_experiment(args)
        print(f"wrote {os.path.join(args.output, args.figure + '.json')}"
              + (" and fig4.png" if args.figure == "fig4" else ""))
        return 0
    register_toy_cifar(args.data, args.curve_images)
    if args.figure == "fig6":
        for run, result in fig6(args).items():
            print(f"{LABELS[run]}: training error {result['train_err']:.2f}%, test error {result['test_err']:.2f}%")
        print(f"wrote {os.path.join(args.output, 'fig6.json')} and fig6.png")
    else:
        for run, result in fig7(args).items():
            stds = torch.tensor(result["std"])
            print(f"{LABELS[run]}: {len(stds)} 3x3 layers, std mean {stds.mean():.3f}, max {stds.max():.3f}")
        print(f"wrote {os.path.join(args.output, 'fig7.json')} and fig7.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
