#!/usr/bin/env python
"""Parameters and GFLOPs (fvcore, one multiply-add = one flop) of a config's model, per image at its test size.

    python tools/analyze_model.py --config configs/r50_imagenet.yaml
    python tools/analyze_model.py --config configs/r50_imagenet.yaml --json MODEL.RESNETS.DEPTH 101

Classifiers are measured on one INPUT.CROP.SIZE square image; detectors on one image whose shorter side
is INPUT.MIN_SIZE_TEST with a 4:3 aspect, the longer side capped at INPUT.MAX_SIZE_TEST.
"""
import argparse
import json
import logging
import sys
from typing import List, Optional, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from resdet import build_model
from resdet.config import setup_cfg
from resdet.utils.cli import ToolArgumentParser, run_tool

DETECTOR_ASPECT = 4 / 3  # width / height of the image a detector is measured on


class DetectorInputAdapter(nn.Module):
    """Feeds one image tensor to a detector as its list-of-dicts batch; returns the outputs' tensors."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        _, height, width = image.shape
        outputs = self.detector([{"image": image, "height": height, "width": width}])
        # the tracer needs tensors, not dicts
        return tuple(value for output in outputs for value in output.values() if isinstance(value, torch.Tensor))


def measured_input_size(cfg) -> Tuple[int, int]:
    """(height, width) of the image the model is measured on."""
    if cfg.MODEL.META_ARCHITECTURE == "Classifier":
        return cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SIZE
    height = cfg.INPUT.MIN_SIZE_TEST
    width = round(height * DETECTOR_ASPECT)
    if cfg.INPUT.MAX_SIZE_TEST and width > cfg.INPUT.MAX_SIZE_TEST:
        height, width = round(cfg.INPUT.MAX_SIZE_TEST / DETECTOR_ASPECT), cfg.INPUT.MAX_SIZE_TEST
    return height, width


def analyze(cfg) -> dict:
    """{"params": int, "gflops": float} of the config's model in eval mode, for one test-size image."""
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    height, width = measured_input_size(cfg)
    device = next(model.parameters()).device
    image = torch.rand(3, height, width, device=device) * 255  # (3, H, W), 0-255
    if cfg.MODEL.META_ARCHITECTURE == "Classifier":
        module, inputs = model, (image[None],)
    else:
        module, inputs = DetectorInputAdapter(model), (image,)
    with torch.no_grad():
        flops = FlopCountAnalysis(module, inputs)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = flops.total()
    return {"params": int(params), "gflops": total / 1e9}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="config file of the model")
    parser.add_argument("--json", action="store_true", help='print one JSON object {"params": int, "gflops": float}')
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Print the parameter count and GFLOPs of the configured model."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = setup_cfg(args.config, args.opts)
    result = analyze(cfg)
    if args.json:
        print(json.dumps(result))
    else:
        height, width = measured_input_size(cfg)
        print(f"{args.config}: {result['params']:,} parameters, {result['gflops']:.2f} GFLOPs "
              f"(multiply-adds) per {height}x{width} image")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
