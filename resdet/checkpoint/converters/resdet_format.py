"""The resdet format: a checkpoint `{"model": state_dict, ...}` or a bare state dict already in resdet names."""
from typing import Dict, Mapping

import torch

from . import WEIGHT_CONVERTERS, WeightConverter


def _state_dict(raw: Mapping) -> Mapping:
    model = raw.get("model")
    return model if isinstance(model, Mapping) else raw


def detect(raw: Mapping) -> bool:
    """Any non-empty mapping of names to tensors, at the top level or under "model"."""
    state = _state_dict(raw)
    return bool(state) and all(isinstance(value, torch.Tensor) for value in state.values())


def convert(raw: Mapping) -> Dict[str, torch.Tensor]:
    """The state dict itself: names are resdet's already."""
    return dict(_state_dict(raw))


WEIGHT_CONVERTERS.register(WeightConverter("resdet", detect, convert, catch_all=True))
