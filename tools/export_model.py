#!/usr/bin/env python
"""Export a detector or classifier to ONNX or a torch.export program, with DIR/model.json beside it.

    python tools/export_model.py --config configs/toy_frcnn_r18_fpn.yaml --format onnx --output deploy/ \
        MODEL.WEIGHTS output/demo/det/model_final.pth
    python tools/export_model.py --config configs/coco_frcnn_r50_fpn.yaml --format torch_export --output pt2/ \
        MODEL.WEIGHTS model_final.pth

A detector's graph takes one image (1, 3, H, W), 0-255 in INPUT.FORMAT order, already resized to the test size by
the caller, and returns boxes (in that image's pixels), scores and labels; model.json states the input format,
pixel statistics (the graph normalises), test sizes, class names and resdet version. ONNX needs
`pip install resdet[export]`; load a .pt2 with `import torchvision` first (it registers NMS and RoIAlign).
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from resdet.checkpoint.meta import class_names
from resdet.deploy import EXPORT_FORMATS, export_model
from resdet.deploy.predictor import build_inference_model, inference_config
from resdet.utils.cli import ToolArgumentParser, run_tool
from resdet.utils.logger import setup_logger

logger = logging.getLogger("resdet.export_model")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config, --format, --output, --debug and trailing KEY VALUE overrides."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--output", required=True, metavar="DIR", help="receives the model file and model.json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    """Build the model with its weights, export it; returns the model file's path."""
    cfg = inference_config(args.config, args.opts)
    model, meta = build_inference_model(cfg)
    path = export_model(model, cfg, args.format, args.output, class_names(cfg, meta))
    logger.info("wrote %s and %s", path, os.path.join(args.output, "model.json"))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; user errors end with one line on stderr and exit code 2 (--debug: the traceback)."""
    args = parse_args(argv)
    setup_logger()
    return run_tool(run, args)


if __name__ == "__main__":
    sys.exit(main())
