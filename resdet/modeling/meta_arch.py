"""META_ARCH_REGISTRY and build_model."""
import logging

from fvcore.common.registry import Registry
from torch import nn

from ..errors import ConfigError
from ..utils.device import resolve_device

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """Model classes with `from_config(cfg)`, named by MODEL.META_ARCHITECTURE."""

logger = logging.getLogger(__name__)


def build_model(cfg) -> nn.Module:
    """Build cfg.MODEL.META_ARCHITECTURE, randomly initialised, on cfg.MODEL.DEVICE."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCH_REGISTRY:
        known = ", ".join(sorted(k for k, _ in META_ARCH_REGISTRY))
        raise ConfigError(f"MODEL.META_ARCHITECTURE: unknown {name!r}; registered: {known}")
    model = META_ARCH_REGISTRY.get(name).from_config(cfg)
    model.to(resolve_device(cfg.MODEL.DEVICE))
    from ..checkpoint import load_weights
    from ..checkpoint.meta import warn_on_input_mismatch

    for path in (cfg.MODEL.BACKBONE.WEIGHTS, cfg.MODEL.WEIGHTS):
        if path:
            warn_on_input_mismatch(cfg, load_weights(model, path).meta, path)
    return model
