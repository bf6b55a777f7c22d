"""torchvision's ImageNet ResNet state dicts (`resnet50-*.pth`): conv1/bn1, layerK.i.convJ/bnJ, downsample, fc."""
import re
from typing import Dict, Mapping

import torch

from . import WEIGHT_CONVERTERS, WeightConverter

# torchvision name pattern -> resdet name template; layerK is stage res{K+1}
_RULES = [
    (re.compile(r"^conv1\.(.+)$"), "stem.conv1.{0}"),
    (re.compile(r"^bn1\.(.+)$"), "stem.norm1.{0}"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)\.(.+)$"), "res{stage}.{1}.conv{2}.{3}"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$"), "res{stage}.{1}.norm{2}.{3}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0\.(.+)$"), "res{stage}.{1}.shortcut.conv.{2}"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$"), "res{stage}.{1}.shortcut.norm.{2}"),
]


def detect(raw: Mapping) -> bool:
    """Top-level `conv1.weight` and `layer1.*` keys of tensors."""
    return "conv1.weight" in raw and any(isinstance(k, str) and k.startswith("layer1.") for k in raw)


def rename(key: str) -> str:
    """One torchvision key in resdet Classifier names; keys outside the trunk (fc.*) keep theirs."""
    for pattern, template in _RULES:
        match = pattern.match(key)
        if match:
            groups = match.groups()
            stage = int(groups[0]) + 1 if key.startswith("layer") else None
            return "backbone." + template.format(*groups, stage=stage)
    return key


def convert(raw: Mapping) -> Dict[str, torch.Tensor]:
    """The state dict with every key renamed to resdet's Classifier names."""
    return {rename(key): value for key, value in raw.items()}


WEIGHT_CONVERTERS.register(WeightConverter("torchvision", detect, convert))
