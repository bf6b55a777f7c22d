"""load_weights: read any supported weight file, convert it to resdet names and load it by key suffix."""
import logging
import os
import pickle
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import CheckpointError, CheckpointNotFoundError, error_message
from .converters import WeightConverter, detect_converter, get_converter
from .meta import read_meta
from .safe_pickle import UnsafePickleError, load_pickle

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pkl", ".pickle")
# The ResNet trunk part of a key: `backbone.bottom_up.res2.0.conv1.weight` -> `res2.0.conv1.weight`.
_TRUNK_KEY = re.compile(r"(?:^|\.)((?:stem|res[2-5])\..+)$")
_IGNORED_SUFFIX = ".num_batches_tracked"  # BN bookkeeping; FrozenBatchNorm2d has none
# torch.load(weights_only=True) names the global it refused: "... GLOBAL posix.system ..."
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_WEIGHTS_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


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


def _first_line(err: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]


def read_torch_file(path: str) -> Any:
    """torch.load(path, weights_only=True) on the CPU; a refused or unreadable file raises a CheckpointError
    (UnsafePickleError when the file would run code) that names it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused:
            raise UnsafePickleError(
                f"{path}: refusing to load the pickle global {refused.group(1)}: a file naming it can run code. "
                "Weight files may hold only tensors, numbers and plain containers; use a file from a trusted "
                "source saved as a state dict (torch.save(model.state_dict(), path))") from None
        # torch's own message suggests weights_only=False, which would run whatever the file holds: give only why
        reason = _WEIGHTS_UNPICKLER_REASON.search(str(err))
        raise UnsafePickleError(
            f"{path}: refused: the safe loader cannot read it ({reason.group(1) if reason else _first_line(err)}); "
            "a weight file may hold only tensors, numbers and plain containers. Load it only if you trust its "
            "source, and save it again as a state dict (torch.save(model.state_dict(), path))") from None
    except Exception as err:  # torch raises many types on a truncated, empty or foreign file (EOFError, KeyError...)
        raise CheckpointError(f"{path}: not a readable torch file ({type(err).__name__}: {_first_line(err)}); "
                              "is it complete? download or save it again") from None


def read_weight_file(path: str) -> Mapping:
    """The file's contents: the restricted unpickler for a `.pkl` pickle, torch.load(weights_only=True) for
    anything else (a torch zip file whatever its name). Nothing in the file runs; errors name the file."""
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"weight file not found: {path}")
    if path.lower().endswith(PICKLE_SUFFIXES) and not zipfile.is_zipfile(path):
        raw = load_pickle(path)
    else:
        raw = read_torch_file(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: expected a dict of weights, found a {type(raw).__name__}")
    return raw


def convert_raw(raw: Mapping, path: str, converter: WeightConverter) -> Dict[str, torch.Tensor]:
    """converter.convert(raw); a file whose contents the format does not fit raises a CheckpointError naming it."""
    try:
        state = converter.convert(raw)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot read it as {converter.name} weights: {error_message(err)}") from None
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} entries are not tensors (first: {bad[0]!r}); not a weight file")
    return state


def convert_weight_file(path: str, format_name: Optional[str] = None
                        ) -> Tuple[Dict[str, torch.Tensor], WeightConverter]:
    """Read `path` and convert it to resdet names with the named converter, or the detected one."""
    raw = read_weight_file(path)
    converter = get_converter(format_name) if format_name else detect_converter(raw, path)
    return convert_raw(raw, path, converter), converter


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
    report = load_state_dict_by_suffix(model, convert_raw(raw, path, converter), path, converter.name)
    report.meta = read_meta(raw)
    logger.log(logging.WARNING if report.mismatched else logging.INFO, "%s", report.summary())
    return report
