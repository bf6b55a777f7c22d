"""ImageFolder classification datasets (<root>/<class>/<image>), e.g. ImageNet's train and val folders."""
import os
from typing import List

from ..errors import DataError
from .catalog import DatasetCatalog, MetadataCatalog, PathSpec, require_path, under_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_classes(name: str, root: PathSpec) -> List[str]:
    """The sorted sub-folder names of `root`: class k is the k-th of them."""
    path = require_path(name, root)
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def load_image_folder(name: str, root: PathSpec) -> List[dict]:
    """`{"file_name", "label"}` for every image below root/<class>/, in sorted order."""
    path = require_path(name, root)
    dicts = []
    for label, cls in enumerate(list_classes(name, path)):
        class_dir = os.path.join(path, cls)
        files = sorted(e.name for e in os.scandir(class_dir) if e.name.lower().endswith(IMAGE_EXTENSIONS))
        dicts.extend({"file_name": os.path.join(class_dir, f), "label": label} for f in files)
    if not dicts:
        raise DataError(f"dataset {name!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) below {path}/<class>/")
    return dicts


def register_image_folder(name: str, root: PathSpec) -> None:
    """Register an ImageFolder tree; thing_classes are its sub-folder names, read when first needed."""
    DatasetCatalog.register(name, lambda: load_image_folder(name, root))
    meta = MetadataCatalog.get(name).set(image_root=root, evaluator_type="classification")
    meta.set_lazy(lambda: {"thing_classes": list_classes(name, root)})


for _split in ("train", "val"):
    register_image_folder(f"imagenet_{_split}", under_root("imagenet", _split))
