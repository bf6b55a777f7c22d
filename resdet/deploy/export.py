"""Export a model to ONNX or a torch.export program (.pt2), with model.json describing its inputs and outputs.

A detector's graph takes one image (1, 3, H, W) float32, 0-255 in INPUT.FORMAT order, already resized by the caller
to the test size (scale = min(MIN_SIZE_TEST / shorter side, MAX_SIZE_TEST / longer side), bilinear, sides
floor(side * scale)); it normalises and pads itself and returns boxes (N, 4) x1y1x2y2 in the resized image's pixels
(divide by scale for the original's), scores (N,) and labels (N,). A classifier's graph is the Classifier itself:
(N, 3, H, W) 0-255 -> logits (N, C). Height and width (and a classifier's batch) are dynamic.
"""
import importlib.util
import json
import os
from typing import Any, Dict, List

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from ..checkpoint.meta import config_meta
from ..errors import UsageError
from ..modeling.detector.exportable import ExportableDetector
from ..modeling.detector.rcnn import FasterRCNN

EXPORT_FORMATS = ("onnx", "torch_export")
MODEL_FILES = {"onnx": "model.onnx", "torch_export": "model.pt2"}
INFO_FILE = "model.json"
INPUT_NAME = "image"
DETECTOR_OUTPUTS = ("boxes", "scores", "labels")
CLASSIFIER_OUTPUTS = ("logits",)
ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx's exporter writes with onnxscript
EXAMPLE_ASPECT = 4 / 3  # the example's sides differ, so that the graph cannot take them for one symbol


def example_input(cfg, device: torch.device) -> torch.Tensor:
    """An input to trace with: a detector's one image at the test size, a classifier's two crops (a batch of 1
    would be fixed to 1), each image of smoothed noise and of unequal sides."""
    if cfg.MODEL.META_ARCHITECTURE == "Classifier":
        shape = (2, 3, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SIZE + 8)
    else:
        height = cfg.INPUT.MIN_SIZE_TEST
        width = min(round(height * EXAMPLE_ASPECT), cfg.INPUT.MAX_SIZE_TEST)
        shape = (1, 3, height, width if width != height else height - 1)
    noise = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    return (nn.functional.avg_pool2d(noise, 5, 1, 2) * 255).to(device)


def min_side(model: nn.Module) -> int:
    """The smallest image side the graph takes: its coarsest feature map must have at least two cells, since the
    graph cannot hold both the broadcasting of a side of 1 and that of larger ones."""
    return max(shape.stride for shape in model.backbone.output_shape().values()) + 1


def export_program(model: nn.Module, example: torch.Tensor) -> ExportedProgram:
    """torch.export of the model's eval path (a FasterRCNN through ExportableDetector), height and width dynamic
    from `min_side` up (and a classifier's batch); export fails rather than fix a size it cannot keep dynamic."""
    side = min_side(model)
    dims = {2: Dim("height", min=side), 3: Dim("width", min=side)}
    if isinstance(model, FasterRCNN):
        graph = ExportableDetector(model)
    else:
        graph, dims[0] = model.eval(), Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(graph, (example,), dynamic_shapes=(dims,))


def program_min_side(program: ExportedProgram) -> int:
    """The smallest height the program's image input takes (its range constraint; width has the same)."""
    name = program.graph_signature.user_inputs[0]
    image = next(node for node in program.graph.nodes if node.name == name)
    return int(program.range_constraints[image.meta["val"].shape[2].node.expr].lower)


def output_names(cfg) -> List[str]:
    """The graph's outputs, in order."""
    return list(CLASSIFIER_OUTPUTS if cfg.MODEL.META_ARCHITECTURE == "Classifier" else DETECTOR_OUTPUTS)


def deployment_info(cfg, class_names: List[str], fmt: str, smallest_side: int) -> Dict[str, Any]:
    """model.json: the checkpoint meta's vocabulary (input format, pixel statistics, test sizes, version) plus the
    file, its input and outputs, and where resizing and normalisation happen."""
    detector = cfg.MODEL.META_ARCHITECTURE != "Classifier"
    return {
        **config_meta(cfg),
        "class_names": list(class_names),
        "format": fmt,
        "file": MODEL_FILES[fmt],
        "input": {"name": INPUT_NAME, "shape": [1 if detector else "batch", 3, "height", "width"],
                  "dtype": "float32", "value_range": [0, 255], "channel_order": cfg.INPUT.FORMAT,
                  "min_side": smallest_side},
        "outputs": output_names(cfg),
        "normalization": "inside the model: (pixels - pixel_mean) / pixel_std",
        "resizing": ("by the caller: scale = min(min_size_test / shorter side, max_size_test / longer side), "
                     "bilinear, sides floor(side * scale); boxes are in the resized image's pixels (divide by scale)"
                     if detector else "by the caller, as TEST.CLS_MODE does (shorter side to test_resize, "
                     "centre crop of crop_size)"),
    }


def export_model(model: nn.Module, cfg, fmt: str, output_dir: str, class_names: List[str]) -> str:
    """Write output_dir/model.{onnx,pt2} and output_dir/model.json for the model (eval, weights loaded); returns the
    model file's path. ONNX needs the optional packages onnx and onnxscript (`pip install resdet[export]`)."""
    program = export_program(model, example_input(cfg, next(model.parameters()).device))
    return write_program(program, cfg, fmt, output_dir, class_names)


def write_program(program: ExportedProgram, cfg, fmt: str, output_dir: str, class_names: List[str]) -> str:
    """Save an `export_program` result in the format and write model.json beside it; returns the file's path."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format: unknown {fmt!r}; choose one of {EXPORT_FORMATS}")
    missing = [name for name in ONNX_PACKAGES if fmt == "onnx" and importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--format onnx needs the packages {missing}: pip install resdet[export]")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILES[fmt])
    if fmt == "torch_export":
        torch.export.save(program, path)
    else:
        # one self-contained file (weights inside): models of this toolkit stay far below ONNX's 2 GB limit
        torch.onnx.export(program, f=path, dynamo=True, external_data=False, input_names=[INPUT_NAME],
                          output_names=output_names(cfg), verbose=False)
    with open(os.path.join(output_dir, INFO_FILE), "w") as file:
        json.dump(deployment_info(cfg, class_names, fmt, program_min_side(program)), file, indent=2)
    return path
