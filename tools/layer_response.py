#!/usr/bin/env python
"""Layer responses (the paper's Fig. 7): std of each 3x3 layer's output after BN, before the ReLU or addition.

    python tools/layer_response.py --config configs/cifar/plain20.yaml --weights output/plain20/model_final.pth \\
        --config configs/cifar/resnet20.yaml --weights output/r20/model_final.pth --output output/fig7
    python tools/layer_response.py --config configs/cifar/resnet20.yaml --random-inputs --num-images 64

The model is a Classifier built from each config (randomly initialised unless --weights is given), run in
eval mode on the first --num-images images of the config's first DATASETS.TEST set (centre crops), or on
random images that are standard normal after the model's normalisation (--random-inputs).
Writes DIR/layer_response.json, {label: {"config", "weights", "num_images", "layers": [norm names],
"std": [one per layer]}}, and DIR/layer_response.png: the stds in network order and sorted by magnitude.
"""
import argparse
import json
import logging
import os
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from resdet import build_model
from resdet.config import ConfigError, setup_cfg
from resdet.data import DatasetNotFoundError
from resdet.errors import UsageError, error_message
from resdet.utils.cli import ToolArgumentParser, run_tool
from resdet.utils.plots import distinct_labels, plot_layer_responses

logger = logging.getLogger("resdet.layer_response")


class RunningStd:
    """Forward hook accumulating the mean and variance of every element of a module's outputs."""

    def __init__(self):
        self.count, self.mean, self.sum_sq_dev = 0, 0.0, 0.0

    def __call__(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        # read now: the block applies relu_ in place to this very tensor right after the norm
        batch_var, batch_mean = torch.var_mean(output.detach().double(), correction=0)
        batch_count, batch_mean = output.numel(), batch_mean.item()
        total = self.count + batch_count
        delta = batch_mean - self.mean
        # Chan et al.'s pairwise update: exact merging of (count, mean, M2) without cancellation
        self.sum_sq_dev += batch_var.item() * batch_count + delta * delta * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.count = total

    def std(self) -> float:
        """Sample standard deviation (as torch.std) over every element seen."""
        return (self.sum_sq_dev / max(self.count - 1, 1)) ** 0.5


def response_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of the norm following each 3x3 conv (convK -> normK), in forward order."""
    layers = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if not (child_name.startswith("conv") and isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3)):
                continue
            norm_name = "norm" + child_name[len("conv"):]
            if hasattr(parent, norm_name):
                layers.append((f"{parent_name}.{norm_name}" if parent_name else norm_name, getattr(parent, norm_name)))
    return layers


def layer_responses(model: nn.Module, batches: Iterable[torch.Tensor]) -> Dict[str, float]:
    """{norm name: std of its output over all elements of all batches}, with the model in eval mode."""
    layers = response_layers(model)
    stats = {name: RunningStd() for name, _ in layers}
    handles = [module.register_forward_hook(stats[name]) for name, module in layers]
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            for images in batches:
                model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: stat.std() for name, stat in stats.items()}


def random_batches(cfg, num_images: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Images (N,3,S,S), S = INPUT.CROP.SIZE, that are standard normal after MODEL.PIXEL_MEAN/STD."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1)
    size = cfg.INPUT.CROP.SIZE
    for start in range(0, num_images, batch_size):
        count = min(batch_size, num_images - start)
        yield torch.randn(count, len(cfg.MODEL.PIXEL_MEAN), size, size, generator=generator) * std + mean


def dataset_batches(cfg, num_images: int) -> Iterator[torch.Tensor]:
    """The first `num_images` centre-cropped test images of cfg.DATASETS.TEST[0]."""
    from resdet.data import build_classification_test_loader

    if not cfg.DATASETS.TEST:
        raise ConfigError("DATASETS.TEST is empty: name a test set or pass --random-inputs")
    remaining = num_images
    for images, _ in build_classification_test_loader(cfg, cfg.DATASETS.TEST[0]):
        yield images[:remaining]
        remaining -= len(images[:remaining])
        if remaining <= 0:
            return


def unique_labels(config_files: List[str], labels: Optional[List[str]]) -> List[str]:
    """--label values, or the config file names without extension (numbered when they repeat)."""
    return distinct_labels(labels or [os.path.splitext(os.path.basename(path))[0] for path in config_files])


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", action="append", required=True, help="config file; repeat to compare models")
    parser.add_argument("--weights", action="append", default=[],
                        help="weights of each --config, in the same order (default: random initialisation)")
    parser.add_argument("--label", action="append", dest="labels",
                        help="legend label of each --config, in the same order (default: file names)")
    parser.add_argument("--num-images", type=int, default=256, help="images to average over")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (--random-inputs)")
    parser.add_argument("--random-inputs", action="store_true",
                        help="random normalised images instead of DATASETS.TEST")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation and inputs")
    parser.add_argument("--output", default="output/layer_response", help="directory for the JSON and PNG")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides applied to every config")
    args = parser.parse_args(argv)
    for option, values in (("--weights", args.weights), ("--label", args.labels)):
        if values and len(values) != len(args.config):
            parser.error(f"{option} given {len(values)} times for {len(args.config)} --config")
    return args


def measure(config_file: str, weights: str, args: argparse.Namespace) -> dict:
    """The layer responses of one config's classifier."""
    overrides = list(args.opts) + ["TEST.CLS_MODE", "center"] + (["MODEL.WEIGHTS", weights] if weights else [])
    cfg = setup_cfg(config_file, overrides)
    if cfg.MODEL.META_ARCHITECTURE != "Classifier":
        raise ConfigError(f"{config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}, "
                         "not a Classifier")
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    if args.random_inputs:
        batches = random_batches(cfg, args.num_images, args.batch_size, args.seed)
    else:
        batches = dataset_batches(cfg, args.num_images)
    stds = layer_responses(model, batches)
    return {"config": config_file, "weights": weights or None, "num_images": args.num_images,
            "layers": list(stds), "std": list(stds.values())}


def main(argv: Optional[List[str]] = None) -> int:
    """Measure every config, write the JSON and the plot, print where they are."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    labels = unique_labels(args.config, args.labels)
    weights = args.weights or [""] * len(args.config)
    try:
        results = {label: measure(config, weight, args) for label, config, weight in zip(labels, args.config, weights)}
    except DatasetNotFoundError as err:
        raise UsageError(f"{error_message(err)}\npass --random-inputs to measure on random images") from None
    os.makedirs(args.output, exist_ok=True)
    json_path = os.path.join(args.output, "layer_response.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    png_path = os.path.join(args.output, "layer_response.png")
    plot_layer_responses({label: result["std"] for label, result in results.items()}, png_path)
    for label, result in results.items():
        stds = torch.tensor(result["std"])
        print(f"{label}: {len(stds)} 3x3 layers, std mean {stds.mean():.3f}, max {stds.max():.3f}")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
