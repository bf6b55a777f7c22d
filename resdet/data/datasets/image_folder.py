"""ImageFolder classification datasets (<root>/<class>/<image>), e.g. ImageNet's train and val folders."""
import os
from typing import List

import numpy as np

from ..errors import DataError
from ..record_store import RecordStore
from ..store_cache import cached_store
from .catalog import DatasetCatalog, MetadataCatalog, PathSpec, require_path, under_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_classes(name: str, root: PathSpec) -> List[str]:
    """The sorted sub-folder names of `root`: class k is the k-th of them."""
    path = require_path(name, root)
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def load_image_folder(name: str, root: PathSpec) -> RecordStore:
    """`{"file_name", "label"}` for every image below root/<class>/, in sorted order.

    Folders are listed with os.scandir (no stat per file); the records are cached in a file keyed by the
    modification times of root and its class folders, which change when an image is added or removed.
    """
    path = require_path(name, root)
    classes = list_classes(name, path)
    class_dirs = [os.path.join(path, cls) for cls in classes]

    def build() -> RecordStore:
        files, counts = [], []
        for class_dir in class_dirs:
            names = sorted(e.name for e in os.scandir(class_dir) if e.name.lower().endswith(IMAGE_EXTENSIONS))
            files.extend(os.path.join(class_dir, f) for f in names)
            counts.append(len(names))
        if not files:
            raise DataError(f"dataset {name!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) below {path}/<class>/")
        labels = np.repeat(np.arange(len(class_dirs), dtype=np.int64), counts)
        return RecordStore.from_columns({"file_name": files, "label": labels})

    return cached_store([path, *class_dirs], {"parser": "image_folder"}, os.path.basename(path), build)


def register_image_folder(name: str, root: PathSpec) -> None:
    """Register an ImageFolder tree; thing_classes are its sub-folder names, read when first needed."""
    DatasetCatalog.register(name, lambda: load_image_folder(name, root))
    meta = MetadataCatalog.get(name).set(image_root=root, evaluator_type="classification")
    meta.set_lazy(lambda: {"thing_classes": list_classes(name, root)}, source=root)


for _split in ("train", "val"):
    register_image_folder(f"imagenet_{_split}", under_root("imagenet", _split))
