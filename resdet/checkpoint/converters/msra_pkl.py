"""MSRA / Caffe2 ImageNet `.pkl` files in Detectron's naming (`conv1_w`, `res2_0_branch2a_bn_s`, `fc1000_w`).

The files hold numpy arrays, either at the top level or under "blobs". A batch norm appears as scale
`_bn_s` and shift `_bn_b`, with its statistics `_bn_rm` / `_bn_riv` (running mean / variance) only when
they were saved. Without statistics the scale and shift already are the whole affine map, so they land
in the norm's weight / bias with running_mean 0 and running_var 1 - eps: every resdet norm (BatchNorm2d,
FrozenBatchNorm2d) divides by sqrt(running_var + eps) with eps = 1e-5, which makes that divisor exactly 1.
Models from these files expect BGR input (INPUT.FORMAT BGR) and STRIDE_IN_1X1 True.
"""
import re
from typing import Dict, Mapping

import numpy as np
import torch

from . import WEIGHT_CONVERTERS, WeightConverter, to_tensor

NORM_EPS = 1e-5  # eps of nn.BatchNorm2d and torchvision's FrozenBatchNorm2d, resdet's norms
_PARAM_SUFFIXES = {"w": "weight", "b": "bias"}
_BN_SUFFIXES = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BLOCK_KEY = re.compile(r"^res(\d)_(\d+)_(branch1|branch2[abc])_(bn_)?(w|b|s|rm|riv)$")
_STEM_KEY = re.compile(r"^(conv1|res_conv1_bn)_(w|b|s|rm|riv)$")
_FC_KEY = re.compile(r"^fc1000_(w|b)$")
_NORM_WEIGHT = re.compile(r"\.norm\d?\.weight$")


def _blobs(raw: Mapping) -> Mapping:
    blobs = raw.get("blobs")
    return blobs if isinstance(blobs, Mapping) else raw


def detect(raw: Mapping) -> bool:
    """`conv1_w` or `resS_I_branch*` keys, at the top level or under "blobs"."""
    blobs = _blobs(raw)
    return "conv1_w" in blobs or any(isinstance(k, str) and _BLOCK_KEY.match(k) for k in blobs)


def _layer_name(branch: str, is_norm: bool) -> str:
    if branch == "branch1":
        return "shortcut.norm" if is_norm else "shortcut.conv"
    index = "abc".index(branch[-1]) + 1
    return f"norm{index}" if is_norm else f"conv{index}"


def rename(key: str) -> str:
    """One MSRA blob name in resdet Classifier names; unknown names are returned unchanged."""
    block = _BLOCK_KEY.match(key)
    if block:
        stage, index, branch, bn, suffix = block.groups()
        field = (_BN_SUFFIXES if bn else _PARAM_SUFFIXES).get(suffix)
        if field:
            return f"backbone.res{stage}.{index}.{_layer_name(branch, bool(bn))}.{field}"
    stem = _STEM_KEY.match(key)
    if stem:
        layer, suffix = stem.groups()
        field = (_BN_SUFFIXES if layer == "res_conv1_bn" else _PARAM_SUFFIXES).get(suffix)
        if field:
            return f"backbone.stem.{'norm1' if layer == 'res_conv1_bn' else 'conv1'}.{field}"
    fc = _FC_KEY.match(key)
    if fc:
        return f"fc.{_PARAM_SUFFIXES[fc.group(1)]}"
    return key


def _fill_missing_statistics(state: Dict[str, torch.Tensor]) -> None:
    """Norms saved as scale/shift only get running_mean 0 and running_var 1 - eps (see module docstring)."""
    for key in [k for k in state if _NORM_WEIGHT.search(k)]:
        prefix = key[: -len("weight")]
        if prefix + "running_mean" not in state:
            state[prefix + "running_mean"] = torch.zeros_like(state[key])
            state[prefix + "running_var"] = torch.full_like(state[key], 1.0 - NORM_EPS)


def convert(raw: Mapping) -> Dict[str, torch.Tensor]:
    """The arrays as tensors in resdet names; optimizer momenta and non-array entries are dropped."""
    state = {
        rename(key): to_tensor(value)
        for key, value in _blobs(raw).items()
        if isinstance(value, np.ndarray) and not key.endswith("_momentum")
    }
    _fill_missing_statistics(state)
    return state


WEIGHT_CONVERTERS.register(WeightConverter("msra", detect, convert))
