"""Dataset catalog and the built-in datasets (ImageNet, CIFAR-10, COCO, VOC, the toy shapes)."""
from .catalog import DatasetCatalog, DatasetNotFoundError, Metadata, MetadataCatalog, datasets_root
from .cifar import register_cifar10
from .coco import register_coco_instances
from .image_folder import register_image_folder
from .toy import TOY_CLASSES, make_toy_data
from .voc import register_voc

__all__ = [
    "DatasetCatalog",
    "DatasetNotFoundError",
    "Metadata",
    "MetadataCatalog",
    "datasets_root",
    "register_cifar10",
    "register_coco_instances",
    "register_image_folder",
    "register_voc",
    "make_toy_data",
    "TOY_CLASSES",
]
