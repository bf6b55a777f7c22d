"""Backbones: the ResNet family, the CIFAR ResNets, FPN; each registered in BACKBONE_REGISTRY."""
from . import cifar_resnet, fpn, resnet  # noqa: F401  (registration)
from .backbone import Backbone, ShapeSpec
from .build import BACKBONE_REGISTRY, build_backbone

__all__ = ["Backbone", "ShapeSpec", "BACKBONE_REGISTRY", "build_backbone"]
