"""WEIGHT_CONVERTERS: one entry per weight-file format, each turning a loaded file into resdet names.

Adding a format (e.g. `detectron2`, `torchvision-frcnn`) takes one new file in this folder and nothing
else: every module here is imported below, so its registration runs. The file defines two functions and
registers them:

    def detect(raw: dict) -> bool:               # True only for files in this format (be specific)
        ...
    def convert(raw: dict) -> Dict[str, Tensor]:  # state dict in resdet names (DEVELOPERS.md)
        ...
    WEIGHT_CONVERTERS.register(WeightConverter("detectron2", detect, convert))

`raw` is what the file held: the object torch.load(weights_only=True) returned, or for `.pkl` files
the dict the restricted unpickler rebuilt (numpy arrays as values). Converters return tensors. Trunk
keys may carry any prefix (`backbone.`, `backbone.bottom_up.`): load_weights matches them by suffix.
The `resdet` format is the catch-all, tried after every other converter has said no.
"""
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np
import torch
from fvcore.common.registry import Registry

from ...errors import CheckpointError

WEIGHT_CONVERTERS = Registry("WEIGHT_CONVERTERS")
WEIGHT_CONVERTERS.__doc__ = """WeightConverter entries, named by their format (`--from` of tools/convert_weights.py)."""


@dataclass(frozen=True)
class WeightConverter:
    """A weight-file format: its name, a test that recognises it and the conversion to resdet names."""

    name: str
    detect: Callable[[dict], bool]
    convert: Callable[[dict], Dict[str, torch.Tensor]]
    catch_all: bool = False  # tried only when no specific format matched

    @property
    def __name__(self) -> str:
        # fvcore's Registry.register files an object under its __name__: the format name here
        return self.name


def converter_names() -> List[str]:
    """Registered format names."""
    return [name for name, _ in WEIGHT_CONVERTERS]


def detect_converter(raw: dict, path: str) -> WeightConverter:
    """The converter whose detect() accepts `raw`; specific formats first, the catch-all last."""
    converters = sorted((c for _, c in WEIGHT_CONVERTERS), key=lambda c: c.catch_all)
    for converter in converters:
        if converter.detect(raw):
            return converter
    raise CheckpointError(f"{path}: unrecognised weight format; known formats: {', '.join(converter_names())}")


def get_converter(name: str) -> WeightConverter:
    """The converter registered under `name`; the error lists the registered ones."""
    if name not in WEIGHT_CONVERTERS:
        raise KeyError(f"no weight converter named {name!r} is registered; registered: {', '.join(converter_names())}")
    return WEIGHT_CONVERTERS.get(name)


def to_tensor(value) -> torch.Tensor:
    """A numpy array (or tensor) as a tensor that owns its memory."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.array(value))


def _import_all_converters() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_all_converters()

__all__ = ["WEIGHT_CONVERTERS", "WeightConverter", "converter_names", "detect_converter", "get_converter", "to_tensor"]
