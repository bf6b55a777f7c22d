"""BACKBONE_REGISTRY and the function that builds the configured backbone."""
from fvcore.common.registry import Registry

from ...errors import ConfigError
from .backbone import Backbone, ShapeSpec

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Functions `fn(cfg, input_shape: ShapeSpec) -> Backbone`, named by MODEL.BACKBONE.NAME."""


def build_backbone(cfg, input_shape: ShapeSpec = None) -> Backbone:
    """Build the backbone named by cfg.MODEL.BACKBONE.NAME."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        known = ", ".join(sorted(k for k, _ in BACKBONE_REGISTRY))
        raise ConfigError(f"MODEL.BACKBONE.NAME: unknown backbone {name!r}; registered: {known}")
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    assert isinstance(backbone, Backbone), f"{name} must return a Backbone"
    return backbone
