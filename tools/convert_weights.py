#!/usr/bin/env python
"""Convert a torchvision / MSRA .pkl / detectron2 / torchvision Faster R-CNN weight file to a resdet checkpoint.

    python tools/convert_weights.py --from torchvision resnet50-0676ba61.pth r50_torchvision.pth
    python tools/convert_weights.py --from msra R-50.pkl r50_msra.pth --config configs/r50_imagenet.yaml
    python tools/convert_weights.py --strip output/model_final.pth model_deploy.pth

The output is `{"model": state_dict}` in resdet names, readable by resdet.load_weights and MODEL.WEIGHTS.
With --config, the converted weights are also loaded into the model that config builds, and the report
of missing / unused / mismatched keys is printed. --strip makes a resdet training checkpoint a deployment file: its
weights and meta (class names, input format, test sizes) without the optimizer, schedule and data-order state that
only resuming needs, about a third of the size for SGD with momentum.
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

import torch

from resdet.checkpoint.checkpointer import write_checkpoint_file
from resdet.checkpoint.converters import converter_names
from resdet.checkpoint.load import convert_weight_file, load_state_dict_by_suffix, read_torch_file
from resdet.checkpoint.meta import META_KEY
from resdet.config import setup_cfg
from resdet.errors import UsageError
from resdet.utils.cli import ToolArgumentParser, run_tool

FORMATS = ("torchvision", "msra", "detectron2", "torchvision-frcnn")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="format", choices=sorted(set(FORMATS) | set(converter_names())),
                        help="format of IN (detected from the contents when left out)")
    parser.add_argument("--strip", action="store_true",
                        help="IN is a resdet training checkpoint: keep only its weights and meta")
    parser.add_argument("--config", default="", help="also load the result into this config's model and report")
    parser.add_argument("input", metavar="IN", help="weight file to convert")
    parser.add_argument("output", metavar="OUT", help="resdet checkpoint to write")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides (with --config)")
    return parser.parse_intermixed_args(argv)


def save_checkpoint(state: dict, path: str) -> None:
    """Write `{"model": state}` atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = path + ".tmp"
    torch.save({"model": state}, tmp_path)
    os.replace(tmp_path, path)


def strip_checkpoint(input_path: str, output_path: str) -> int:
    """Write the weights and meta of the training checkpoint `input_path` to `output_path`; print the sizes."""
    if not os.path.isfile(input_path):
        raise UsageError(f"--strip: {input_path} does not exist")
    data = read_torch_file(input_path)
    if not isinstance(data, dict) or "model" not in data:
        keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"--strip: {input_path} is not a resdet training checkpoint (no 'model' entry; it holds "
                         f"{keys}); to convert another format, use --from")
    kept = {key: data[key] for key in ("model", META_KEY) if key in data}
    write_checkpoint_file(output_path, kept)
    dropped = sorted(set(data) - set(kept))
    print(f"{input_path} ({os.path.getsize(input_path) / 1e6:.1f} MB) -> {output_path} "
          f"({os.path.getsize(output_path) / 1e6:.1f} MB): kept {len(data['model'])} tensors"
          f"{' and meta' if META_KEY in kept else ''}, dropped {', '.join(dropped) or 'nothing'}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Convert IN to OUT; with --config, print how the result fits that model."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.format and args.format not in converter_names():
        raise UsageError(f"no converter for --from {args.format} is registered yet "
                         f"(registered: {', '.join(converter_names())})")
    if args.strip:
        if args.format:
            raise UsageError("--strip keeps a resdet checkpoint's weights; it takes no --from")
        return strip_checkpoint(args.input, args.output)
    state, converter = convert_weight_file(args.input, args.format)
    save_checkpoint(state, args.output)
    print(f"{args.input} ({converter.name}) -> {args.output}: {len(state)} tensors")
    if args.config:
        from resdet import build_model

        cfg = setup_cfg(args.config, args.opts)
        print(load_state_dict_by_suffix(build_model(cfg), state, args.input, converter.name).summary())
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
