"""resdet: ResNet classification pretraining and Faster R-CNN detection."""
from .config import get_cfg

__version__ = "0.1.0"


def build_model(cfg):
    """Build the model the config describes, randomly initialised, on cfg.MODEL.DEVICE."""
    from .modeling import build_model as _build_model

    return _build_model(cfg)


def load_weights(model, path):
    """Load a resdet checkpoint or convert a torchvision / MSRA / detectron2 file into `model`."""
    from .checkpoint import load_weights as _load_weights

    return _load_weights(model, path)


def __getattr__(name: str):
    """`resdet.Predictor`, imported on first use (it pulls in the data and evaluation packages)."""
    if name == "Predictor":
        from .deploy import Predictor

        return Predictor
    raise AttributeError(f"module 'resdet' has no attribute {name!r}")


__all__ = ["get_cfg", "build_model", "load_weights", "Predictor", "__version__"]
