"""Datasets (catalog, formats, the toy generator), transforms and data loaders."""
from .build import (
    build_classification_test_loader,
    build_classification_train_loader,
    build_detection_test_loader,
    build_detection_train_loader,
)
from .datasets import (
    DatasetCatalog,
    DatasetNotFoundError,
    Metadata,
    MetadataCatalog,
    datasets_root,
    make_toy_data,
    register_coco_instances,
    register_voc,
)
from .errors import DataError, DatasetNotRegisteredError, UnreadableImageError

__all__ = [
    "DataError",
    "DatasetNotRegisteredError",
    "UnreadableImageError",
    "DatasetCatalog",
    "DatasetNotFoundError",
    "Metadata",
    "MetadataCatalog",
    "datasets_root",
    "make_toy_data",
    "register_coco_instances",
    "register_voc",
    "build_classification_train_loader",
    "build_classification_test_loader",
    "build_detection_train_loader",
    "build_detection_test_loader",
]
