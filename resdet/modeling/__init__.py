"""Models: backbones, the classifier and the detectors, built from the config."""
from . import classifier, detector  # noqa: F401  (registration)
from .backbone import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from .meta_arch import META_ARCH_REGISTRY, build_model

__all__ = ["BACKBONE_REGISTRY", "META_ARCH_REGISTRY", "Backbone", "ShapeSpec", "build_backbone", "build_model"]
