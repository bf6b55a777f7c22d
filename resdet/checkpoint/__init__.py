"""Weight files: load_weights (any supported format, matched by key suffix) and the format converters."""
from .converters import WEIGHT_CONVERTERS, WeightConverter
from .load import LoadReport, convert_weight_file, load_weights, read_weight_file
from .safe_pickle import UnsafePickleError, load_pickle

__all__ = [
    "WEIGHT_CONVERTERS",
    "WeightConverter",
    "LoadReport",
    "convert_weight_file",
    "load_weights",
    "read_weight_file",
    "UnsafePickleError",
    "load_pickle",
]
