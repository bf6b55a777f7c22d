"""load_weights: read any supported weight file, convert it to resdet names and load it by key suffix."""
import logging
import os
import pickle
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .converters import WeightConverter, detect_converter, get_converter
from .meta import read_meta
from .safe_pickle import UnsafePickleError, load_pickle

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pkl", ".pickle")
# The ResNet trunk part of a key: `backbone.bottom_up.res2.0.conv1.weight` -> `res2.0.conv1.weight`.
_TRUNK_KEY = re.compile(r"(?:^|\.)((?:stem|res[2-5])\..+)$")
_IGNORED_SUFFIX = ".num_batches_tracked"  # BN bookkeeping; FrozenBatchNorm2d has none


@dataclass
class LoadReport:
    """What load_weights did: keys loaded, left out, not used and not loaded for a shape mismatch."""

    path: str
    format: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # model keys the file did not fill
    unexpected: List[str] = field(default_factory=list)  # file keys no model key took
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)  # key, file, model
    meta: Dict[str, Any] = field(default_factory=dict)  # the file's `meta` entry (resdet/checkpoint/meta.py), or {}

    def summary(self) -> str:
        """A few lines naming every group of keys that was not loaded."""
        lines = [f"{self.path} ({self.format} format): loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"left out, not in the file ({len(self.missing)}): {', '.join(group_keys(self.missing))}")
        if self.unexpected:
            lines.append(f"in the file, unused ({len(self.unexpected)}): {', '.join(group_keys(self.unexpected))}")
        for key, file_shape, model_shape in self.mismatched:
            lines.append(f"not loaded, shape mismatch: {key}: file {file_shape} vs model {model_shape}")
        return "\n".join(lines)


def group_keys(keys: Iterable[str]) -> List[str]:
    """Keys grouped by module: `roi_heads.box_predictor.{bias, weight}`."""
    fields = defaultdict(list)
    for key in keys:
        module, _, name = key.rpartition(".")
        fields[module].append(name)
    return [f"{module}.{{{', '.join(names)}}}" if module else ", ".join(names) for module, names in fields.items()]


def read_weight_file(path: str) -> Mapping:
    """The file's contents: torch.load(weights_only=True), or the restricted unpickler for `.pkl`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.endswith(PICKLE_SUFFIXES):
        raw = load_pickle(path)
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafePickleError(f"{path}: torch.load(weights_only=True) refused the file: {err}") from None
        except RuntimeError as err:
            raise ValueError(f"{path}: not a readable torch file: {err}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a dict of weights, found a {type(raw).__name__}")
    return raw


def convert_weight_file(path: str, format_name: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], WeightConverter]:
    """Read `path` and convert it to resdet names with the named converter, or the detected one."""
    raw = read_weight_file(path)
    converter = get_converter(format_name) if format_name else detect_converter(raw, path)
    return converter.convert(raw), converter


def trunk_key(key: str) -> Optional[str]:
    """The ResNet trunk suffix of a key (`res5.0.conv1.weight`), or None outside the trunk."""
    match = _TRUNK_KEY.search(key)
    return match.group(1) if match else None


def match_keys(source_keys: Iterable[str], target_keys: Iterable[str]) -> Dict[str, str]:
    """Target key -> source key: equal names first, then equal trunk suffixes (unique in the source)."""
    source_keys, target_keys = list(source_keys), list(target_keys)
    exact = set(source_keys) & set(target_keys)
    matches = {key: key for key in target_keys if key in exact}
    by_suffix = defaultdict(list)
    for key in source_keys:
        suffix = trunk_key(key)
        if suffix is not None and key not in exact:
            by_suffix[suffix].append(key)
    for key in target_keys:
        candidates = by_suffix.get(trunk_key(key) or "", [])
        if key not in matches and len(candidates) == 1:  # an ambiguous suffix is left to the report
            matches[key] = candidates[0]
    return matches


def load_state_dict_by_suffix(model: nn.Module, source: Mapping[str, torch.Tensor], path: str,
                              format_name: str) -> LoadReport:
    """Load `source` (resdet names) into `model`; shape mismatches are reported, never loaded."""
    target = model.state_dict()
    matches = match_keys(source, target)
    report = LoadReport(path=path, format=format_name)
    to_load = {}
    for target_key, source_key in matches.items():
        value = source[source_key]
        if tuple(value.shape) != tuple(target[target_key].shape):
            report.mismatched.append((target_key, tuple(value.shape), tuple(target[target_key].shape)))
        else:
            to_load[target_key] = value
            report.loaded.append(target_key)
    model.load_state_dict(to_load, strict=False)
    used = set(matches.values())
    report.missing = [k for k in target if k not in matches and not k.endswith(_IGNORED_SUFFIX)]
    report.unexpected = [k for k in source if k not in used and not k.endswith(_IGNORED_SUFFIX)]
    return report


def load_weights(model: nn.Module, path: str) -> LoadReport:
    """Load any supported weight file into `model` (format detected); log and return the report."""
    raw = read_weight_file(path)
    converter = detect_converter(raw, path)
    report = load_state_dict_by_suffix(model, converter.convert(raw), path, converter.name)
    report.meta = read_meta(raw)
    logger.log(logging.WARNING if report.mismatched else logging.INFO, "%s", report.summary())
    return report
