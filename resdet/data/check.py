"""Check the datasets a config names before training: load each, decode every image, count and name problems."""
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..errors import error_message, is_user_error
from .build import images_with_boxes
from .class_count import check_num_classes
from .datasets import DatasetCatalog, MetadataCatalog
from .datasets.issues import DataIssues, dataset_issues
from .image_io import try_read_image
from .record_store import RecordStore


@dataclass
class DatasetReport:
    """What check_dataset found in one dataset."""

    name: str
    role: str  # "train" or "test": unreadable images are skipped (DATALOADER.SKIP_CORRUPT) only in training
    classes: List[str] = field(default_factory=list)
    num_images: int = 0
    detection: bool = False
    num_annotations: int = 0  # detection: annotations kept; classification: labelled images
    class_counts: List[int] = field(default_factory=list)  # annotations (or images) per class
    images_without_boxes: int = 0  # detection images with no box usable for training (none, crowd or difficult)
    issues: Optional[DataIssues] = None  # annotations and images the loader dropped or clipped
    unreadable: List[Tuple[str, str]] = field(default_factory=list)  # (file, why)
    size_mismatch: List[Tuple[str, str]] = field(default_factory=list)  # (file, file size vs annotated size)
    decoded: bool = False
    error: str = ""  # why the dataset could not be loaded at all

    def problems(self, skip_corrupt: bool) -> List[str]:
        """Why training or evaluating on this dataset would fail or go wrong (empty when it is usable)."""
        if self.error:
            return [self.error]
        found, unreadable = [], len(self.unreadable)
        if unreadable and unreadable == self.num_images:
            found.append(f"dataset {self.name!r}: none of its {unreadable} images can be read; "
                         "is the image root right?")
        elif unreadable and self.role != "train":
            found.append(f"dataset {self.name!r}: {unreadable} unreadable images; evaluation needs every image")
        elif unreadable and not skip_corrupt:
            found.append(f"dataset {self.name!r}: {unreadable} unreadable images; replace them, or set "
                         "DATALOADER.SKIP_CORRUPT True to skip them in training")
        if self.size_mismatch:
            found.append(f"dataset {self.name!r}: {len(self.size_mismatch)} images differ in size from their "
                         "annotations, whose boxes would be misplaced")
        if self.role == "train" and self.detection and self.images_without_boxes == self.num_images:
            found.append(f"dataset {self.name!r}: no image has a box to train on")
        return found

    def lines(self) -> List[str]:
        """The report as text: counts, then every dropped or clipped annotation and every bad image."""
        head = f"dataset {self.name} ({self.role})"
        if self.error:
            return [head, f"  cannot be loaded: {self.error}"]
        lines = [head, f"  images: {self.num_images}, annotations: {self.num_annotations}"
                 + (f", images without a box to train on: {self.images_without_boxes}" if self.detection else "")]
        if self.classes:
            lines.append("  per class: " + ", ".join(f"{c} {n}" for c, n in zip(self.classes, self.class_counts)))
        if self.issues:
            for (kind, reason), count in self.issues.counts().items():
                lines.append(f"  {kind} ({count}), {reason}:")
                lines.extend(f"    {item}" for item in self.issues.items(kind, reason))
        if not self.decoded:
            lines.append("  images not decoded (--no-images)")
            return lines
        lines.append(f"  unreadable images: {len(self.unreadable)}")
        lines.extend(f"    {file}: {why}" for file, why in self.unreadable)
        if self.size_mismatch:
            lines.append(f"  images whose size differs from the annotations: {len(self.size_mismatch)}")
            lines.extend(f"    {file}: {sizes}" for file, sizes in self.size_mismatch)
        return lines


def _count_classes(report: DatasetReport, records: Sequence[dict]) -> None:
    report.detection = bool(len(records)) and "annotations" in records[0]
    if report.detection:
        report.images_without_boxes = int((~images_with_boxes(records)).sum())
        labels = _nested_column(records, "annotations", "category_id")
        if labels is None:
            labels = [a["category_id"] for r in records for a in r["annotations"]]
    else:
        labels = records.column("label") if _typed(records, "label") else [r["label"] for r in records]
    report.num_annotations = len(labels)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(report.classes))
    report.class_counts = counts.tolist()


def _typed(records: Sequence[dict], field: str) -> bool:
    return isinstance(records, RecordStore) and records.schema.get(field) == "int"


def _nested_column(records: Sequence[dict], field: str, key: str) -> Optional[np.ndarray]:
    """(M,) values of `key` in every entry of nested `field` of a whole store, or None if not typed so."""
    if not (isinstance(records, RecordStore) and records.index is None
            and isinstance(records.schema.get(field), dict)):
        return None
    entries = records.nested(field)
    return entries.column(key) if _typed(entries, key) else None


def _image_shape(file_name: str) -> Tuple[Optional[Tuple[int, int]], str]:
    image, why = try_read_image(file_name)
    return (image.shape[:2] if image is not None else None), why


def _decode_all(report: DatasetReport, records: Sequence[dict], workers: int) -> None:
    """Decode every image, with a progress bar (OpenCV releases the GIL, so threads decode in parallel)."""
    with_files = [(r["file_name"], r.get("height"), r.get("width")) for r in records if "file_name" in r]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(_image_shape, [file_name for file_name, _, _ in with_files], chunksize=16)
        progress = tqdm(zip(with_files, results), total=len(with_files), desc=f"decoding {report.name}",
                        unit="image", disable=None, mininterval=2.0, file=sys.stderr)
        for (file_name, height, width), (shape, why) in progress:
            if shape is None:
                report.unreadable.append((file_name, why))
            elif height is not None and tuple(shape) != (height, width):
                report.size_mismatch.append(
                    (file_name, f"{shape[1]}x{shape[0]} in the file, {width}x{height} in the annotations"))
    report.decoded = True


def check_dataset(name: str, role: str = "train", decode_images: bool = True, workers: int = 4) -> DatasetReport:
    """Load dataset `name` as training would, count what it holds and, with `decode_images`, decode every image."""
    report = DatasetReport(name, role)
    try:
        records = DatasetCatalog.get_records(name)
        report.classes = list(MetadataCatalog.get(name).get("thing_classes") or [])
    except Exception as err:
        if not is_user_error(err):
            raise
        report.error = error_message(err)
        return report
    report.num_images = len(records)
    report.issues = dataset_issues(name)
    _count_classes(report, records)
    if decode_images:
        _decode_all(report, records, workers)
    return report


def check_config_datasets(cfg, config_file: str = "", decode_images: bool = True,
                          workers: int = 4) -> Tuple[List[DatasetReport], List[str]]:
    """Reports on every dataset of DATASETS.TRAIN and DATASETS.TEST, and the problems that make the data unusable."""
    roles = {name: "train" for name in cfg.DATASETS.TRAIN}
    roles.update({name: "test" for name in cfg.DATASETS.TEST if name not in roles})
    reports = [check_dataset(name, role, decode_images, workers) for name, role in roles.items()]
    problems = [p for r in reports for p in r.problems(cfg.DATALOADER.SKIP_CORRUPT)]
    loaded = [r.name for r in reports if not r.error]
    train_classes = {tuple(r.classes) for r in reports if r.role == "train" and not r.error}
    if len(train_classes) > 1:
        problems.append(f"DATASETS.TRAIN: the datasets {list(cfg.DATASETS.TRAIN)} have different classes "
                        "and cannot be trained on together")
    try:
        check_num_classes(cfg, loaded, config_file)
    except Exception as err:
        if not is_user_error(err):
            raise
        problems.append(error_message(err))
    return reports, problems

