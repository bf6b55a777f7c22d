"""PASCAL VOC devkit trees (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt) -> dataset dicts."""
import os
import re
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence

from .catalog import (
    DatasetCatalog, MetadataCatalog, PathSpec, register_spec_prefix, require_path, resolve_path, under_root,
)

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
LABELS_FILE = "labels.txt"  # optional, in the devkit folder: one class name per line (config-only datasets)


def parse_voc_xml(xml_path: str, class_names: Sequence[str]) -> dict:
    """One annotation file -> size and annotations; 1-based inclusive pixel boxes become 0-based continuous."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    annotations = []
    for obj in root.iter("object"):
        cls = obj.findtext("name", "").strip()
        if cls not in class_names:
            raise ValueError(f"{xml_path}: object class {cls!r} is not one of {list(class_names)}")
        box = obj.find("bndbox")
        x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        # Pixel i (1-based) spans [i-1, i): the inclusive box [xmin, xmax] spans [xmin-1, xmax].
        annotations.append({
            "bbox": [x1 - 1.0, y1 - 1.0, x2, y2],
            "category_id": class_names.index(cls),
            "iscrowd": 0,
            "difficult": obj.findtext("difficult", "0").strip() == "1",
        })
    return {"height": int(size.findtext("height")), "width": int(size.findtext("width")), "annotations": annotations}


def load_voc_instances(name: str, dirname: PathSpec, split: str, class_names: Sequence[str]) -> List[dict]:
    """Dataset dicts of the images listed in ImageSets/Main/<split>.txt."""
    root = require_path(name, dirname)
    list_file = require_path(name, os.path.join(root, "ImageSets", "Main", f"{split}.txt"))
    with open(list_file) as f:
        image_ids = [line.strip() for line in f if line.strip()]
    dicts = []
    for image_id in image_ids:
        record = parse_voc_xml(require_path(name, os.path.join(root, "Annotations", f"{image_id}.xml")), class_names)
        record.update(file_name=os.path.join(root, "JPEGImages", f"{image_id}.jpg"), image_id=image_id)
        dicts.append(record)
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
        raise ValueError(f"dataset {name!r}: expected 'voc:<dirname>:<split>'")
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
