"""detectron2 checkpoints: a model-zoo `.pkl` `{"model": {name: ndarray}, "__author__": ...}` or a `.pth`
`{"model": state_dict}`.

detectron2 names a norm after the conv it follows (`res2.0.conv1.norm.*`, `stem.conv1.norm.*`), a projection
shortcut `shortcut.weight` / `shortcut.norm.*`, and its FPN layers `backbone.fpn_lateral{k}` / `fpn_output{k}`;
the RPN head (`proposal_generator.rpn_head.*`), the box head (`roi_heads.box_head.fc{1,2}`), the C4 head
(`roi_heads.res5.*`) and the predictor (background last, class-specific boxes) already match resdet's.

Anchor order: detectron2 runs sizes outer and aspect ratios inner within a cell, resdet the reverse
(resdet/modeling/detector/anchors.py), so the RPN head's output channels are permuted on levels with several
sizes (C4: 5 sizes x 3 ratios). detectron2 checkpoints do not record their anchors; the permutation assumes
detectron2's default of DETECTRON2_NUM_ASPECT_RATIOS ratios per size.
The models expect BGR input and STRIDE_IN_1X1 True (configs/detectron2/).
"""
import re
from typing import Dict, Mapping

import numpy as np
import torch

from . import WEIGHT_CONVERTERS, WeightConverter, to_tensor

DETECTRON2_NUM_ASPECT_RATIOS = 3  # MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS [[0.5, 1.0, 2.0]]
_RPN_HEAD = "proposal_generator.rpn_head."
# buffers resdet recomputes from its config instead of storing
_DROPPED = re.compile(r"^(?:pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*)$")
_BLOCK = r"((?:.*\.)?(?:stem|res[2-5]\.\d+))"
_CONV_NORM = re.compile(_BLOCK + r"\.conv(\d)\.norm\.(.+)$")
_SHORTCUT_CONV = re.compile(_BLOCK + r"\.shortcut\.(weight|bias)$")
_FPN = re.compile(r"^((?:.*\.)?)fpn_(lateral|output)(\d)\.(weight|bias)$")
_FPN_BLOCKS = {"lateral": "inner_blocks", "output": "layer_blocks"}  # torchvision FeaturePyramidNetwork
# keys only a detectron2 model has: conv-attached norms, bare shortcut convs, its FPN layers
_DETECTRON2_ONLY = re.compile(r"(?:^|\.)(?:(?:stem\.conv1|res[2-5]\.\d+\.conv\d)\.norm\."
                              r"|res[2-5]\.\d+\.shortcut\.weight$|fpn_(?:lateral|output)\d\.)")


def _state_dict(raw: Mapping) -> Mapping:
    model = raw.get("model")
    return model if isinstance(model, Mapping) else raw


def detect(raw: Mapping) -> bool:
    """A key only detectron2 uses (`stem.conv1.norm.*`, `res2.0.conv1.norm.*`, `shortcut.weight`, `fpn_lateral2.*`)."""
    return any(isinstance(k, str) and _DETECTRON2_ONLY.search(k) for k in _state_dict(raw))


def rename(key: str, first_fpn_level: int = 2) -> str:
    """One detectron2 key in resdet names; `fpn_lateral{k}` is FPN block k - first_fpn_level."""
    norm = _CONV_NORM.match(key)
    if norm:
        block, index, field = norm.groups()
        return f"{block}.norm{index}.{field}"
    shortcut = _SHORTCUT_CONV.match(key)
    if shortcut:
        return f"{shortcut.group(1)}.shortcut.conv.{shortcut.group(2)}"
    fpn = _FPN.match(key)
    if fpn:
        prefix, kind, level, field = fpn.groups()
        return f"{prefix}fpn.{_FPN_BLOCKS[kind]}.{int(level) - first_fpn_level}.0.{field}"
    return key


def anchors_to_resdet_order(value: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """Rows of an RPN output layer (A or 4A rows) from (size, ratio) order to resdet's (ratio, size) order."""
    num_ratios = DETECTRON2_NUM_ASPECT_RATIOS
    if num_anchors % num_ratios:
        raise ValueError(f"detectron2 checkpoint: {_RPN_HEAD}objectness_logits has {num_anchors} anchors per cell, "
                         f"not a multiple of {num_ratios} aspect ratios")
    # resdet row r * S + s holds detectron2 row s * R + r
    order = torch.arange(num_anchors).view(num_anchors // num_ratios, num_ratios).t().reshape(-1)
    per_anchor = value.reshape(num_anchors, -1, *value.shape[1:])  # (A, 1 or 4, ...)
    return per_anchor[order].reshape(value.shape)


def convert(raw: Mapping) -> Dict[str, torch.Tensor]:
    """The arrays as tensors in resdet names, RPN outputs in resdet's anchor order; non-arrays are dropped."""
    source = {key: to_tensor(value) for key, value in _state_dict(raw).items()
              if isinstance(value, (np.ndarray, torch.Tensor)) and not _DROPPED.match(key)}
    fpn_levels = [int(m.group(3)) for m in map(_FPN.match, source) if m]
    first_fpn_level = min(fpn_levels, default=2)
    state = {rename(key, first_fpn_level): value for key, value in source.items()}
    logits = state.get(_RPN_HEAD + "objectness_logits.weight")
    if logits is not None:
        for layer in ("objectness_logits", "anchor_deltas"):
            for field in ("weight", "bias"):
                key = f"{_RPN_HEAD}{layer}.{field}"
                if key in state:
                    state[key] = anchors_to_resdet_order(state[key], len(logits))
    return state


WEIGHT_CONVERTERS.register(WeightConverter("detectron2", detect, convert))
