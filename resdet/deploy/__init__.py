"""Deployment: Predictor (a trained model on images or files) and export to ONNX and torch.export."""
from .export import EXPORT_FORMATS, export_model
from .predictor import Predictor

__all__ = ["EXPORT_FORMATS", "Predictor", "export_model"]
