"""META_ARCH_REGISTRY and build_model."""
import logging

import torch
from fvcore.common.registry import Registry
from torch import nn

from ..errors import ConfigError

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """Model classes with `from_config(cfg)`, named by MODEL.META_ARCHITECTURE."""

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """MODEL.DEVICE to a torch.device; "auto" is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {name!r} but CUDA is not available; use MODEL.DEVICE cpu")
    return device


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
