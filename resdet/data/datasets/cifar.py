"""CIFAR-10 from the official python batches (cifar-10-batches-py), read without running pickle code."""
import os
from typing import Any, List, Tuple

import numpy as np

from ...checkpoint.safe_pickle import load_pickle
from ..errors import DataError
from ..record_store import RecordStore
from ..store_cache import cached_store
from .catalog import DatasetCatalog, MetadataCatalog, PathSpec, require_path, resolve_path, under_root

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
VAL_FRACTION = 10  # the paper's split: the last tenth (5k of 50k) of the training batches is validation


def _field(batch: dict, key: str) -> Any:
    """A batch entry whether the pickle's keys are str or bytes (Python 2 files)."""
    return batch[key] if key in batch else batch[key.encode()]


def read_batch(name: str, path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images (n,32,32,3) uint8 RGB and labels (n,) int64 of one batch file; DataError names a malformed one."""
    batch = load_pickle(path)  # never runs code from the file; raises a user error naming it
    not_a_batch = DataError(f"dataset {name!r}: {path} is not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    if not isinstance(batch, dict):
        raise not_a_batch
    try:
        rows, labels = np.asarray(_field(batch, "data")), np.asarray(_field(batch, "labels"))
    except (KeyError, TypeError, ValueError):  # no such key, unhashable, ragged lists
        raise not_a_batch from None
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32:
        raise DataError(f"dataset {name!r}: {path}: 'data' must be (n, 3072) uint8, found {rows.dtype} {rows.shape}")
    if labels.shape != rows.shape[:1] or labels.dtype.kind not in "iu" or ((labels < 0) | (labels >= 10)).any():
        raise DataError(f"dataset {name!r}: {path}: 'labels' must be {len(rows)} integers in 0..9")
    # rows: 1024 R, 1024 G, 1024 B values
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def read_batches(name: str, root: PathSpec, batch_names: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N,32,32,3) uint8 RGB and labels (N,) int64 of the named batch files, in order."""
    folder = require_path(name, root)
    batches = [read_batch(name, require_path(name, os.path.join(folder, batch_name))) for batch_name in batch_names]
    return np.concatenate([images for images, _ in batches]), np.concatenate([labels for _, labels in batches])


def load_cifar10(name: str, root: PathSpec, split: str) -> RecordStore:
    """`{"image": (32,32,3) uint8 RGB, "label"}` records of split train | train45k | val5k | test (cached)."""
    folder = require_path(name, root)
    batch_names = TEST_BATCHES if split == "test" else TRAIN_BATCHES
    sources = [require_path(name, os.path.join(folder, batch_name)) for batch_name in batch_names]

    def build() -> RecordStore:
        images, labels = read_batches(name, folder, batch_names)
        num_val = len(images) // VAL_FRACTION
        ranges = {"train": (0, len(images)), "test": (0, len(images)),
                  "train45k": (0, len(images) - num_val), "val5k": (len(images) - num_val, len(images))}
        begin, end = ranges[split]
        return RecordStore.from_records([{"image": images[i], "label": int(labels[i])} for i in range(begin, end)])

    return cached_store(sources, {"parser": "cifar10", "split": split}, f"cifar10_{split}", build)


def read_label_names(name: str, root: PathSpec) -> List[str]:
    """Class names from batches.meta."""
    path = require_path(name, os.path.join(resolve_path(root), "batches.meta"))
    meta = load_pickle(path)
    try:
        names = list(_field(meta, "label_names")) if isinstance(meta, dict) else None
    except (KeyError, TypeError):
        names = None
    if names is None:
        raise DataError(f"dataset {name!r}: {path} has no 'label_names' list")
    return [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in names]


def register_cifar10(name: str, root: PathSpec, split: str) -> None:
    """Register one split of a cifar-10-batches-py folder."""
    if split not in ("train", "train45k", "val5k", "test"):
        raise DataError(f"dataset {name!r}: unknown CIFAR-10 split {split!r}")
    DatasetCatalog.register(name, lambda: load_cifar10(name, root, split))
    meta = MetadataCatalog.get(name).set(image_root=root, evaluator_type="classification")
    meta.set_lazy(lambda: {"thing_classes": read_label_names(name, root)}, source=root)


for _split in ("train", "train45k", "val5k", "test"):
    register_cifar10(f"cifar10_{_split}", under_root("cifar10", "cifar-10-batches-py"), _split)
