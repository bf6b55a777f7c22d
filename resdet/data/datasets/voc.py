"""PASCAL VOC devkit trees (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt) -> dataset dicts.

Listed images whose xml is missing or malformed are dropped, objects of unknown classes or with bad boxes
dropped (boxes crossing the border clipped), all counted in one warning per dataset.
"""
import logging
import os
import re
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from .catalog import (
    DatasetCatalog, MetadataCatalog, PathSpec, register_spec_prefix, require_path, resolve_path, under_root,
)
from .issues import DROPPED_ANNOTATIONS, DROPPED_IMAGES, DataIssues, check_boxes, report_issues

logger = logging.getLogger(__name__)

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
LABELS_FILE = "labels.txt"  # optional, in the devkit folder: one class name per line (config-only datasets)


def _number(text: Optional[str]) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _image_size(root: ET.Element) -> Optional[Tuple[int, int]]:
    """(height, width) from <size>, or None when either is not a positive integer."""
    values = [_number(root.findtext(f"size/{key}")) for key in ("height", "width")]
    if not all(v is not None and 1 <= v < 2**31 and v.is_integer() for v in values):
        return None
    return int(values[0]), int(values[1])


def _read_xml(xml_path: str, issues: DataIssues) -> Optional[ET.Element]:
    """The parsed root element, or None (recorded in `issues`) for a missing or malformed file."""
    name = os.path.basename(xml_path)
    try:
        return ET.parse(xml_path).getroot()
    except FileNotFoundError:
        issues.add(DROPPED_IMAGES, "annotation file missing", [xml_path])
    except ET.ParseError as err:
        issues.add(DROPPED_IMAGES, "not well-formed XML", [f"{name}: {err}"])
    except (OSError, ValueError) as err:  # unreadable, or a path the list file made invalid (a NUL byte)
        issues.add(DROPPED_IMAGES, "annotation file unreadable", [f"{name}: {err}"])
    return None


def parse_voc_xml(xml_path: str, class_names: Sequence[str], issues: Optional[DataIssues] = None) -> Optional[dict]:
    """One annotation file -> size and annotations; 1-based inclusive pixel boxes become 0-based continuous.

    Problems are recorded in `issues` (the image, or the object, is then left out: None for the image);
    without `issues` the first one raises DataError naming the file and object.
    """
    issues = issues if issues is not None else DataIssues(xml_path, strict=True)
    name = os.path.basename(xml_path)
    root = _read_xml(xml_path, issues)
    if root is None:
        return None
    size = _image_size(root)
    if size is None:
        issues.add(DROPPED_IMAGES, "no positive integer <size> <width> and <height>", [name])
        return None
    boxes, objects = [], []
    for index, obj in enumerate(root.iter("object")):
        cls = (obj.findtext("name") or "").strip()
        if cls not in class_names:
            issues.add(DROPPED_ANNOTATIONS, f"class not one of {list(class_names)}", [f"{name} object {index} {cls!r}"])
            continue
        coords = [_number(obj.findtext(f"bndbox/{key}")) for key in ("xmin", "ymin", "xmax", "ymax")]
        if None in coords:
            issues.add(DROPPED_ANNOTATIONS, "no numeric <bndbox> xmin, ymin, xmax, ymax", [f"{name} object {index}"])
            continue
        x1, y1, x2, y2 = coords
        # Pixel i (1-based) spans [i-1, i): the inclusive box [xmin, xmax] spans [xmin-1, xmax].
        boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
        objects.append((index, cls, (obj.findtext("difficult") or "0").strip() == "1", coords))
    height, width = size
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)

    def describe(k: int) -> str:
        index, cls, _, coords = objects[k]
        return f"{name} object {index} {cls!r} bndbox {coords} in a {width}x{height} image"

    keep, boxes = check_boxes(boxes, np.full(len(boxes), height), np.full(len(boxes), width), describe, issues)
    annotations = [
        {"bbox": boxes[k].tolist(), "category_id": class_names.index(objects[k][1]), "iscrowd": 0,
         "difficult": objects[k][2]}
        for k in np.flatnonzero(keep)
    ]
    return {"height": height, "width": width, "annotations": annotations}


def _read_image_ids(list_file: str) -> List[str]:
    try:
        with open(list_file, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as err:
        raise DataError(f"{list_file}: not a text file of image ids: {err}") from None


def load_voc_instances(name: str, dirname: PathSpec, split: str, class_names: Sequence[str]) -> List[dict]:
    """Dataset dicts of the images listed in ImageSets/Main/<split>.txt."""
    root = require_path(name, dirname)
    list_file = require_path(name, os.path.join(root, "ImageSets", "Main", f"{split}.txt"))
    annotations_dir = require_path(name, os.path.join(root, "Annotations"))
    issues = DataIssues(root)
    dicts = []
    for image_id in _read_image_ids(list_file):
        record = parse_voc_xml(os.path.join(annotations_dir, f"{image_id}.xml"), class_names, issues)
        if record is not None:
            record.update(file_name=os.path.join(root, "JPEGImages", f"{image_id}.jpg"), image_id=image_id)
            dicts.append(record)
    report_issues(name, issues)
    if not dicts:
        raise DataError("\n  ".join([f"dataset {name!r}: {list_file} lists no usable image"] + issues.lines()))
    logger.info("dataset %s: %d images from %s", name, len(dicts), list_file)
    return dicts


def _year_of(dirname: str) -> int:
    """2007 for a VOC2007 folder (11-point AP), else 2012."""
    match = re.search(r"(20\d\d)", os.path.basename(os.path.normpath(dirname)))
    return int(match.group(1)) if match else 2012


def register_voc(name: str, dirname: PathSpec, split: str, class_names: Sequence[str],
                 year: Optional[int] = None) -> None:
    """Register a VOC-format split; `year` (for the evaluator) defaults to the one in the folder's name."""
    class_names = list(class_names)
    DatasetCatalog.register(name, lambda: load_voc_instances(name, dirname, split, class_names))
    MetadataCatalog.get(name).set(
        thing_classes=class_names,
        evaluator_type="voc",
        dirname=dirname,
        split=split,
        year=year if year is not None else _year_of(resolve_path(dirname)),
    )


def _register_from_spec(name: str, rest: str) -> None:
    """'voc:<dirname>:<split>'; classes from <dirname>/labels.txt when present, else the 20 VOC classes."""
    dirname, sep, split = rest.rpartition(":")
    if not (sep and dirname and split):
        raise DataError(f"dataset {name!r}: expected 'voc:<dirname>:<split>'")
    labels = os.path.join(dirname, LABELS_FILE)
    class_names = VOC_CLASSES
    if os.path.isfile(labels):
        with open(labels) as f:
            class_names = [line.strip() for line in f if line.strip()]
    register_voc(name, dirname, split, class_names)


def _register_builtin() -> None:
    for year in (2007, 2012):
        for split in ("trainval", "train", "val", "test"):
            register_voc(f"voc_{year}_{split}", under_root(f"VOC{year}"), split, VOC_CLASSES, year)
    register_spec_prefix("voc", _register_from_spec)


_register_builtin()
