"""MODEL.DEVICE to a device, by one rule for the models and the tools' set-up (no model import here)."""
import torch

from ..errors import ConfigError


def device_type(name: str) -> str:
    """The device type MODEL.DEVICE names: "cpu", "cuda", ...; "auto" is cuda when available, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def resolve_device(name: str) -> torch.device:
    """MODEL.DEVICE to a torch.device; "auto" is cuda when available, else cpu."""
    device = torch.device(device_type(name) if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {name!r} but CUDA is not available; use MODEL.DEVICE cpu")
    return device
