"""torchvision Faster R-CNN state dicts (`fasterrcnn_resnet50_fpn-*.pth`, or a training checkpoint's "model").

torchvision names: `backbone.body.*` (an ImageNet ResNet), `backbone.fpn.*` (torchvision.ops.FeaturePyramidNetwork,
which resdet's FPN uses as is), `rpn.head.{conv,cls_logits,bbox_pred}`, `roi_heads.box_head.{fc6,fc7}` and
`roi_heads.box_predictor.{cls_score,bbox_pred}`. Its predictor puts the background at row 0 of `cls_score` and
has 4 box rows for it first in `bbox_pred`; resdet's puts the background last and has no box rows for it.
The models expect RGB input, torchvision's pixel statistics and STRIDE_IN_1X1 False
(configs/torchvision/frcnn_r50_fpn.yaml).
"""
import re
from typing import Dict, Mapping

import torch

from . import WEIGHT_CONVERTERS, WeightConverter
from .torchvision_resnet import rename as rename_trunk

_BODY = "backbone.body."
_PREDICTOR = "roi_heads.box_predictor."
# torchvision name pattern -> resdet name template (the trunk and the predictor are handled apart)
_RULES = [
    (re.compile(r"^backbone\.fpn\.(.+)$"), "backbone.fpn.{0}"),
    (re.compile(r"^rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)$"), "proposal_generator.rpn_head.conv.{0}"),
    (re.compile(r"^rpn\.head\.cls_logits\.(weight|bias)$"), "proposal_generator.rpn_head.objectness_logits.{0}"),
    (re.compile(r"^rpn\.head\.bbox_pred\.(weight|bias)$"), "proposal_generator.rpn_head.anchor_deltas.{0}"),
    (re.compile(r"^roi_heads\.box_head\.fc6\.(weight|bias)$"), "roi_heads.box_head.fc1.{0}"),
    (re.compile(r"^roi_heads\.box_head\.fc7\.(weight|bias)$"), "roi_heads.box_head.fc2.{0}"),
]


def _state_dict(raw: Mapping) -> Mapping:
    model = raw.get("model")
    return model if isinstance(model, Mapping) else raw


def detect(raw: Mapping) -> bool:
    """`backbone.body.conv1.weight` with torchvision's RPN (`rpn.head.*`) or box predictor keys."""
    state = _state_dict(raw)
    return _BODY + "conv1.weight" in state and any(
        isinstance(k, str) and (k.startswith("rpn.head.") or k.startswith(_PREDICTOR)) for k in state)


def rename(key: str) -> str:
    """One torchvision detector key in resdet names; keys outside the known layers are returned unchanged."""
    if key.startswith(_BODY):
        return "backbone.bottom_up." + rename_trunk(key[len(_BODY):])[len("backbone."):]
    for pattern, template in _RULES:
        match = pattern.match(key)
        if match:
            return template.format(*match.groups())
    return key


def convert_predictor(name: str, value: torch.Tensor) -> torch.Tensor:
    """`cls_score`: move the background row from first to last; `bbox_pred`: drop the background's 4 rows."""
    if name.startswith("cls_score."):
        return torch.cat([value[1:], value[:1]])
    if name.startswith("bbox_pred."):
        return value[4:]
    raise KeyError(f"torchvision Faster R-CNN: unknown box predictor key {_PREDICTOR + name!r}")


def convert(raw: Mapping) -> Dict[str, torch.Tensor]:
    """The state dict in resdet names, the predictor rows in resdet's class order."""
    state = {}
    for key, value in _state_dict(raw).items():
        if key.startswith(_PREDICTOR):
            state[key] = convert_predictor(key[len(_PREDICTOR):], value)
        else:
            state[rename(key)] = value
    return state


WEIGHT_CONVERTERS.register(WeightConverter("torchvision-frcnn", detect, convert))
