"""Evaluators: reset() / process(inputs, outputs) / evaluate() -> dict, gathered across ranks."""
from .classification import ClassificationEvaluator, classification_inference

__all__ = ["ClassificationEvaluator", "classification_inference"]
