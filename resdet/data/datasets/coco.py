"""COCO-format detection datasets: instances json + image folder -> resdet dataset dicts."""
import contextlib
import io
import logging
import os
from typing import Dict, List

import numpy as np
from pycocotools.coco import COCO

from .catalog import (
    DatasetCatalog, MetadataCatalog, PathSpec, register_spec_prefix, require_path, resolve_path, under_root,
)

logger = logging.getLogger(__name__)

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


def _load_coco_api(name: str, json_file: PathSpec) -> COCO:
    path = require_path(name, json_file)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(path)


def load_coco_json(name: str, json_file: PathSpec, image_root: PathSpec) -> List[dict]:
    """Dataset dicts of a COCO instances json; boxes become [x1, y1, x2, y2], categories contiguous."""
    api = _load_coco_api(name, json_file)
    root = require_path(name, image_root)
    id_map = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    json_ids = {c["id"] for c in api.dataset.get("categories", [])}
    if json_ids != set(id_map):
        raise ValueError(f"dataset {name!r}: category ids of {resolve_path(json_file)} differ from its metadata")
    dicts = []
    for image_id in sorted(api.imgs):
        info = api.imgs[image_id]
        anns = api.imgToAnns.get(image_id, [])
        dicts.append({
            "file_name": os.path.join(root, info["file_name"]),
            "image_id": image_id,
            "height": int(info["height"]),
            "width": int(info["width"]),
            "annotations": _convert_annotations(anns, id_map),
        })
    logger.info("dataset %s: %d images from %s", name, len(dicts), resolve_path(json_file))
    return dicts


def _convert_annotations(anns: List[dict], id_map: Dict[int, int]) -> List[dict]:
    """COCO annotations -> resdet annotations; boxes without area are dropped."""
    if not anns:
        return []
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return [
        {
            "bbox": box.tolist(),
            "category_id": id_map[ann["category_id"]],
            "iscrowd": int(ann.get("iscrowd", 0)),
            "difficult": False,
        }
        for ann, box, ok in zip(anns, xyxy, keep)
        if ok
    ]


def register_coco_instances(name: str, json_file: PathSpec, image_root: PathSpec) -> None:
    """Register a COCO-format dataset; categories are read from the json the first time they are needed."""
    DatasetCatalog.register(name, lambda: load_coco_json(name, json_file, image_root))
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    meta.set_lazy(lambda: category_metadata(_load_coco_api(name, json_file).dataset["categories"]))


def _register_from_spec(name: str, rest: str) -> None:
    """'coco:<json_file>:<image_root>' from DATASETS.TRAIN / TEST."""
    json_file, sep, image_root = rest.partition(":")
    if not (sep and json_file and image_root):
        raise ValueError(f"dataset {name!r}: expected 'coco:<json_file>:<image_root>'")
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
