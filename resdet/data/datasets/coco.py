"""COCO-format detection datasets: instances json + image folder -> resdet dataset dicts.

Malformed entries are dropped (or boxes clipped) and counted in one warning per dataset; a file that is
not a COCO instances json at all raises DataError naming it.
"""
import itertools
import json
import logging
import os
from typing import Container, Dict, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from ..record_store import RecordStore
from ..store_cache import cached_store
from .catalog import (
    DatasetCatalog, MetadataCatalog, PathSpec, register_spec_prefix, require_path, resolve_path, under_root,
)
from .issues import (
    DROPPED_ANNOTATIONS, DROPPED_IMAGES, DataIssues, check_boxes, report_issues, short_repr,
)

logger = logging.getLogger(__name__)

_REAL_TYPES = {int, float}  # a bbox value's exact type (JSON true/false become bools, which are ints)
# Larger coordinates are treated as not finite: x + width of two of them still fits a float64.
_MAX_COORDINATE = 1e300

# The 80 COCO categories in id order; ids run 1..90 with these ten left out.
_COCO_MISSING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in _COCO_MISSING_IDS]
COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
]


def category_metadata(categories: List[dict]) -> Dict[str, object]:
    """thing_classes and the id maps; contiguous ids follow the ascending order of the json's ids."""
    ordered = sorted(categories, key=lambda c: c["id"])
    dataset_ids = [c["id"] for c in ordered]
    return {
        "thing_classes": [c["name"] for c in ordered],
        "thing_dataset_id_to_contiguous_id": {cid: i for i, cid in enumerate(dataset_ids)},
        "thing_contiguous_id_to_dataset_id": dict(enumerate(dataset_ids)),
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_coco_json(path: str) -> dict:
    """The parsed json at `path`, checked to be an object with 'images' and 'categories' lists."""
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # not UTF-8/16/32 text, an integer too long, nesting too deep
        raise DataError(f"{path}: not valid JSON: {err}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read: {err.strerror or err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO instances JSON object, found {short_repr(data)}")
    for key in ("images", "categories", "annotations"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: {key!r} must be a list, found {short_repr(data[key])}")
        if key != "annotations" and key not in data:
            raise DataError(f"{path}: no {key!r} list; is this a COCO instances file?")
    return data


def parse_categories(data: dict, path: str) -> List[dict]:
    """The json's categories as {"id": int, "name": str}; malformed or duplicate entries raise DataError."""
    categories, seen = [], set()
    for index, entry in enumerate(data["categories"]):
        if not (isinstance(entry, dict) and _is_int(entry.get("id")) and isinstance(entry.get("name"), str)):
            raise DataError(f"{path}: categories[{index}] needs an integer 'id' and a string 'name', "
                            f"found {short_repr(entry)}")
        if entry["id"] in seen:
            raise DataError(f"{path}: categories[{index}]: category id {entry['id']} appears twice")
        seen.add(entry["id"])
        categories.append({"id": entry["id"], "name": entry["name"]})
    if not categories:
        raise DataError(f"{path}: 'categories' is empty; name at least one category")
    return categories


def _image_problem(entry: object, seen_ids: Container[int]) -> Optional[str]:
    """Why an 'images' entry cannot be used, or None."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if not _is_int(entry.get("id")):
        return "no integer 'id'"
    if not -2**63 <= entry["id"] < 2**63:  # the records keep ids as int64
        return "image id beyond 64 bits"
    if entry["id"] in seen_ids:
        return "image id listed twice"
    if not (isinstance(entry.get("file_name"), str) and entry["file_name"]):
        return "no 'file_name'"
    sizes = (entry.get("height"), entry.get("width"))
    if not all(_is_number(v) and 1 <= v < 2**31 and float(v).is_integer() for v in sizes):
        return "no positive integer 'height' and 'width'"
    return None


def _parse_images(data: dict, root: str, issues: DataIssues) -> Dict[int, Tuple[str, int, int]]:
    """image id -> (file name, height, width), in the json's order; unusable entries are dropped."""
    images: Dict[int, Tuple[str, int, int]] = {}
    for index, entry in enumerate(data["images"]):
        problem = _image_problem(entry, images.keys())
        if problem:
            issues.add(DROPPED_IMAGES, problem, [f"images[{index}] {short_repr(entry)}"])
            continue
        images[entry["id"]] = (os.path.join(root, entry["file_name"]), int(entry["height"]), int(entry["width"]))
    return images


def _annotation_problem(entry: object, images: Container[int], id_map: Dict[int, int]) -> Optional[str]:
    """Why an 'annotations' entry cannot be used (before its box is checked), or None."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    for key in ("image_id", "category_id", "bbox"):
        if key not in entry:
            return f"no {key!r}"
    if not (_is_int(entry["image_id"]) and entry["image_id"] in images):
        return "image_id not among the usable 'images'"
    if not (_is_int(entry["category_id"]) and entry["category_id"] in id_map):
        return "category_id not in 'categories'"
    bbox = entry["bbox"]
    # set(map(type, ...)) keeps this check fast over the 10^6 annotations of a large dataset
    if not (isinstance(bbox, list) and len(bbox) == 4 and set(map(type, bbox)) <= _REAL_TYPES):
        return "bbox is not [x, y, width, height]"
    if entry.get("iscrowd", 0) not in (0, 1):
        return "iscrowd is not 0 or 1"
    return None


def _annotation_name(index: int, entry: dict) -> str:
    return f"annotations[{index}] (id {short_repr(entry.get('id'))}, image {short_repr(entry.get('image_id'))})"


def _record_dropped(index: int, entry: object, problem: str, issues: DataIssues) -> None:
    if isinstance(entry, dict):
        shown = {key: entry[key] for key in ("category_id", "bbox", "iscrowd") if key in entry}
        issues.add(DROPPED_ANNOTATIONS, problem, [f"{_annotation_name(index, entry)} {short_repr(shown)}"])
    else:
        issues.add(DROPPED_ANNOTATIONS, problem, [f"annotations[{index}] {short_repr(entry)}"])


def _well_typed_fields(entries: List[object]) -> Optional[Tuple[list, list, list, list]]:
    """(image ids, category ids, bboxes, crowd flags) when every entry has fields of the right types, else None.

    The common case of a large, clean file, checked a column at a time (set(map(type, ...)) runs in C).
    """
    if set(map(type, entries)) - {dict}:
        return None
    try:
        image_ids = [entry["image_id"] for entry in entries]
        category_ids = [entry["category_id"] for entry in entries]
        bboxes = [entry["bbox"] for entry in entries]
    except KeyError:
        return None
    crowd = [entry.get("iscrowd", 0) for entry in entries]
    if (set(map(type, image_ids)) - {int} or set(map(type, category_ids)) - {int} or set(map(type, bboxes)) - {list}
            or set(map(len, bboxes)) - {4} or set(map(type, itertools.chain.from_iterable(bboxes))) - _REAL_TYPES
            or set(map(type, crowd)) - {int} or set(crowd) - {0, 1}):
        return None
    return image_ids, category_ids, bboxes, crowd


def _select_annotations(entries: List[object], image_ids: np.ndarray, id_map: Dict[int, int], issues: DataIssues):
    """(json indices (M,), image ids, category ids, bboxes, crowd flags) of the usable annotations.

    `image_ids` holds the usable images' ids, sorted. The others are recorded in `issues` and dropped.
    """
    fields = _well_typed_fields(entries)
    candidates = range(len(entries))
    if fields is not None:  # only membership can fail: find those entries in bulk
        try:
            ids = np.asarray(fields[0], dtype=np.int64)
            categories = np.asarray(fields[1], dtype=np.int64)
            known_categories = np.asarray(sorted(id_map), dtype=np.int64)
            usable = _is_among(ids, image_ids) & _is_among(categories, known_categories)
            candidates = np.flatnonzero(~usable).tolist()
        except OverflowError:  # an id beyond int64: no image or category has it; check every entry
            fields = None
    image_set, dropped = set(image_ids.tolist()), set()
    for index in candidates:
        problem = _annotation_problem(entries[index], image_set, id_map)
        if problem is not None:
            _record_dropped(index, entries[index], problem, issues)
            dropped.add(index)
    if fields is not None and not dropped:
        return np.arange(len(entries), dtype=np.int64), *fields
    kept = [index for index in range(len(entries)) if index not in dropped]
    chosen = [entries[index] for index in kept]
    return (np.asarray(kept, dtype=np.int64), [e["image_id"] for e in chosen], [e["category_id"] for e in chosen],
            [e["bbox"] for e in chosen], [int(e.get("iscrowd", 0)) for e in chosen])


def _is_among(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each value is in `sorted_set` (sorted, unique)."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[positions] == values


def coco_record_store(data: dict, path: str, root: str, id_map: Dict[int, int], issues: DataIssues) -> RecordStore:
    """Records (sorted by image id) of parsed COCO json `data` as a RecordStore; boxes become [x1, y1, x2, y2]."""
    images = _parse_images(data, root, issues)
    image_ids = np.asarray(sorted(images), dtype=np.int64)  # (N,) the records' order
    entries = data.get("annotations", [])
    indices, ann_image_ids, category_ids, bboxes, crowd = _select_annotations(entries, image_ids, id_map, issues)
    owner = np.searchsorted(image_ids, np.asarray(ann_image_ids, dtype=np.int64))  # (M,) record of each
    heights = np.array([images[i][1] for i in image_ids.tolist()], dtype=np.int64)
    widths = np.array([images[i][2] for i in image_ids.tolist()], dtype=np.int64)
    xywh = _coordinates(bboxes)
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (M,4) x1y1x2y2

    def describe(k: int) -> str:
        entry = entries[indices[k]]
        size = f"{widths[owner[k]]}x{heights[owner[k]]}"
        return f"{_annotation_name(int(indices[k]), entry)} bbox {entry['bbox']} in a {size} image"

    keep, boxes = check_boxes(boxes, heights[owner].astype(np.float64), widths[owner].astype(np.float64),
                              describe, issues)
    known_categories = np.asarray(sorted(id_map), dtype=np.int64)
    contiguous = np.asarray([id_map[c] for c in known_categories.tolist()], dtype=np.int64)
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(owner[kept], kind="stable")]  # by record; the json's order within one
    offsets = np.zeros(len(image_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[kept], minlength=len(image_ids)), out=offsets[1:])
    annotations = {"bbox": boxes[kept], "category_id": contiguous[np.searchsorted(known_categories, np.asarray(category_ids, dtype=np.int64)[kept])],
                   "iscrowd": np.asarray(crowd, dtype=np.int64)[kept], "difficult": np.zeros(len(kept), dtype=bool)}
    return RecordStore.from_columns({
        "file_name": [images[i][0] for i in image_ids.tolist()], "image_id": image_ids,
        "height": heights, "width": widths, "annotations": (offsets, annotations)})


def _coordinates(bboxes: List[list]) -> np.ndarray:
    """(M,4) float64 of lists of 4 ints or floats; values too large for float64 arithmetic become NaN."""
    try:
        values = np.array(bboxes, dtype=np.float64).reshape(-1, 4)
    except OverflowError:  # a JSON integer beyond float64
        values = np.array([[float(v) if abs(v) < _MAX_COORDINATE else np.nan for v in box] for box in bboxes],
                          dtype=np.float64).reshape(-1, 4)
    values[np.abs(values) >= _MAX_COORDINATE] = np.nan
    return values


def _metadata_from_json(name: str, json_file: PathSpec, image_root: PathSpec) -> Dict[str, object]:
    path = require_path(name, json_file)
    if os.path.isdir(resolve_path(image_root)):  # the record store has the categories: no second parse
        return category_metadata(coco_record_store_of(name, path, resolve_path(image_root)).meta["categories"])
    return category_metadata(parse_categories(read_coco_json(path), path))


def coco_record_store_of(name: str, path: str, root: str) -> RecordStore:
    """The records of the json at `path` (contiguous ids in the json's category order), from the cache file
    of this json version when there is one; meta holds "categories" and the parser's "issues"."""
    def build() -> RecordStore:
        data = read_coco_json(path)
        categories = parse_categories(data, path)
        issues = DataIssues(path)
        id_map = category_metadata(categories)["thing_dataset_id_to_contiguous_id"]
        store = coco_record_store(data, path, root, id_map, issues)
        if not len(store):
            raise DataError("\n  ".join([f"dataset {name!r}: {path} lists no usable image"] + issues.lines()))
        store.meta.update(categories=categories, issues=issues.to_json())
        return store

    return cached_store([path], {"parser": "coco", "image_root": os.path.abspath(root)}, os.path.basename(path), build)


def load_coco_json(name: str, json_file: PathSpec, image_root: PathSpec) -> RecordStore:
    """Records of a COCO instances json; boxes become [x1, y1, x2, y2], categories contiguous."""
    path = require_path(name, json_file)
    root = require_path(name, image_root)
    store = coco_record_store_of(name, path, root)
    id_map = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    json_ids = [c["id"] for c in store.meta["categories"]]
    if set(json_ids) != set(id_map):
        raise DataError(f"dataset {name!r}: category ids of {path} differ from the dataset's metadata")
    if id_map != category_metadata(store.meta["categories"])["thing_dataset_id_to_contiguous_id"]:
        store = store.with_column("annotations/category_id", np.asarray(
            [id_map[i] for i in sorted(json_ids)], dtype=np.int64)[store.arrays["annotations/category_id"]])
    report_issues(name, DataIssues.from_json(path, store.meta["issues"]))
    logger.info("dataset %s: %d images from %s", name, len(store), path)
    return store


def register_coco_instances(name: str, json_file: PathSpec, image_root: PathSpec) -> None:
    """Register a COCO-format dataset; categories are read from the json the first time they are needed."""
    DatasetCatalog.register(name, lambda: load_coco_json(name, json_file, image_root))
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    meta.set_lazy(lambda: _metadata_from_json(name, json_file, image_root), source=json_file)


def _register_from_spec(name: str, rest: str) -> None:
    """'coco:<json_file>:<image_root>' from DATASETS.TRAIN / TEST."""
    json_file, sep, image_root = rest.partition(":")
    if not (sep and json_file and image_root):
        raise DataError(f"dataset {name!r}: expected 'coco:<json_file>:<image_root>'")
    register_coco_instances(name, json_file, image_root)


def _register_builtin() -> None:
    coco_meta = category_metadata([{"id": i, "name": n} for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)])
    for split in ("train", "val"):
        name = f"coco_2017_{split}"
        register_coco_instances(
            name, under_root("coco", "annotations", f"instances_{split}2017.json"), under_root("coco", f"{split}2017")
        )
        MetadataCatalog.get(name).set(**coco_meta)
    register_spec_prefix("coco", _register_from_spec)


_register_builtin()
