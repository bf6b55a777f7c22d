"""Backbones: the ResNet family, the CIFAR ResNets, FPN; each registered in BACKBONE_REGISTRY."""
from .backbone import Backbone, ShapeSpec
from .build import BACKBONE_REGISTRY, build_backbone
from . import resnet, cifar_resnet, fpn  # noqa: F401  (registration)

__all__ = ["Backbone", "ShapeSpec", "BACKBONE_REGISTRY", "build_backbone"]
