"""The embedded synthetic shapes world, written in the real formats, and its catalog names.

`make_toy_data(out_dir, seed)` writes, deterministically (same seed, same bytes):
  out_dir/cls/{train,val}/<class>/*.jpg                      64x64, one shape per image (ImageFolder)
  out_dir/coco/{annotations/instances_{train,val}.json, train/, val/}   128-160 px, 1-4 shapes each
  out_dir/voc/VOC2007/{Annotations, JPEGImages, ImageSets/Main/{trainval,test}.txt, labels.txt}
The detection images are the same scenes in both formats (VOC trainval = COCO train, test = val).
"""
import json
import os
import xml.etree.ElementTree as ET
from typing import List, Tuple

import cv2
import numpy as np

from .catalog import MetadataCatalog, under_root
from .coco import category_metadata, register_coco_instances
from .image_folder import register_image_folder
from .voc import LABELS_FILE, register_voc

TOY_CLASSES = ["circle", "cross", "square", "triangle"]  # alphabetical, so ImageFolder order agrees
TOY_CATEGORY_IDS = [10, 20, 30, 40]  # not 0..C-1 on purpose: exercises the COCO id <-> contiguous maps
JPEG_QUALITY = 95
CLS_PER_CLASS = {"train": 400, "val": 40}
DET_IMAGES = {"train": 120, "val": 40}
DIFFICULT_MAX_SIDE = 16  # VOC "difficult": objects whose larger side is below this many pixels
CROWD_EVERY = 8  # every 8th val scene gets a crowd (COCO iscrowd=1, VOC difficult)

# Unit polygons (radius 1) of the polygonal classes.
_CROSS = np.array([[-1, -1 / 3], [-1 / 3, -1 / 3], [-1 / 3, -1], [1 / 3, -1], [1 / 3, -1 / 3], [1, -1 / 3],
                   [1, 1 / 3], [1 / 3, 1 / 3], [1 / 3, 1], [-1 / 3, 1], [-1 / 3, 1 / 3], [-1, 1 / 3]])
_SQUARE = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.8
_TRIANGLE = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([-90, 30, 150])])
_POLYGONS = {"cross": _CROSS, "square": _SQUARE, "triangle": _TRIANGLE}


def _background(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """A textured background (H,W,3) float32 BGR: base colour plus smooth blotches; returns it and the base."""
    base = rng.uniform(40, 215, size=3)
    blotches = rng.normal(0, 35, size=(max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    texture = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    return base.astype(np.float32) + texture, base


def _shape_colour(rng: np.random.Generator, base: np.ndarray, cls_index: int) -> np.ndarray:
    """A BGR colour in the class's hue band (classes 45 degrees apart, +-12 jitter), saturation and value
    random, far enough from the background's base colour to be seen. Hue is a strong cue: bands
    do not overlap, which lets a ResNet trained from scratch on the CPU in minutes generalise (with random
    colours it only memorises the training images); detectors still have to localise the shapes."""
    while True:
        hue = (cls_index * 45 + rng.uniform(-12, 12)) % 180  # OpenCV hue scale: 0-179
        hsv = np.array([[[hue, rng.uniform(120, 255), rng.uniform(110, 255)]]], np.float32)
        colour = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
        if np.abs(colour - base).sum() >= 150:
            return colour


def _draw_shape(canvas: np.ndarray, cls: str, centre: np.ndarray, size: float, angle: float,
                colour: np.ndarray) -> np.ndarray:
    """Draw one shape (anti-aliased) on `canvas`; return its (H,W) bool mask."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    shift = 4  # sub-pixel vertex precision for OpenCV
    scale = 1 << shift
    colour = tuple(float(c) for c in colour)
    if cls == "circle":
        centre_fixed = tuple(int(round(c * scale)) for c in centre)
        radius = int(round(size / 2 * scale))
        cv2.circle(canvas, centre_fixed, radius, colour, -1, cv2.LINE_AA, shift)
        cv2.circle(mask, centre_fixed, radius, 1, -1, cv2.LINE_8, shift)
    else:
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = _POLYGONS[cls] @ rotation.T * (size / 2) + centre
        points = np.round(points * scale).astype(np.int32)[None]
        cv2.fillPoly(canvas, points, colour, cv2.LINE_AA, shift)
        cv2.fillPoly(mask, points, 1, cv2.LINE_8, shift)
    return mask.astype(bool)


def _mask_box(mask: np.ndarray) -> List[float]:
    """[x1, y1, x2, y2] in continuous coordinates: pixel (r, c) spans [c, c+1) x [r, r+1)."""
    cols, rows = np.nonzero(mask.any(axis=0))[0], np.nonzero(mask.any(axis=1))[0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (K,4)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add pixel noise and quantise to uint8."""
    return np.clip(image + rng.normal(0, 6, size=image.shape), 0, 255).astype(np.uint8)


def _classification_image(rng: np.random.Generator, cls: str, side: int = 64) -> np.ndarray:
    """One 64x64 image holding a single shape of class `cls`."""
    image, base = _background(rng, side, side)
    size = rng.uniform(20, 56)
    centre = rng.uniform(size / 2, side - size / 2, size=2)
    _draw_shape(image, cls, centre, size, rng.uniform(0, 2 * np.pi),
                _shape_colour(rng, base, TOY_CLASSES.index(cls)))
    return _finish(image, rng)


def _detection_scene(rng: np.random.Generator, with_crowd: bool) -> Tuple[np.ndarray, List[dict]]:
    """One 128-160 px scene with 1-4 shapes (partial overlaps allowed) and optionally a crowd of tiny ones."""
    height, width = (int(v) for v in rng.integers(128, 161, size=2))
    image, base = _background(rng, height, width)
    objects: List[dict] = []
    for _ in range(int(rng.integers(1, 5))):
        cls_index = int(rng.integers(len(TOY_CLASSES)))
        for _attempt in range(20):
            size = rng.uniform(10, 0.6 * min(height, width))
            centre = rng.uniform(size / 2, [width - size / 2, height - size / 2])
            box = np.concatenate([centre - size / 2, centre + size / 2])
            if not objects or _iou(box, np.array([o["bbox"] for o in objects])).max() < 0.3:
                break
        mask = _draw_shape(image, TOY_CLASSES[cls_index], centre, size, rng.uniform(0, 2 * np.pi),
                           _shape_colour(rng, base, cls_index))
        objects.append({"bbox": _mask_box(mask), "category": cls_index, "area": int(mask.sum()), "crowd": False})
    if with_crowd:
        objects.append(_draw_crowd(image, rng, base))
    return _finish(image, rng), objects


def _draw_crowd(image: np.ndarray, rng: np.random.Generator, base: np.ndarray) -> dict:
    """A cluster of 5-8 tiny shapes of one class, annotated as one crowd region."""
    cls_index = int(rng.integers(len(TOY_CLASSES)))
    height, width = image.shape[:2]
    origin = rng.uniform(0, [width - 40, height - 40])
    masks = [
        _draw_shape(image, TOY_CLASSES[cls_index], origin + rng.uniform(4, 36, size=2), rng.uniform(5, 8),
                    rng.uniform(0, 2 * np.pi), _shape_colour(rng, base, cls_index))
        for _ in range(int(rng.integers(5, 9)))
    ]
    union = np.logical_or.reduce(masks)
    box = _mask_box(union)
    return {"bbox": box, "category": cls_index, "area": int((box[2] - box[0]) * (box[3] - box[1])), "crowd": True}


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("OpenCV could not encode a JPEG image")
    return data.tobytes()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _write_classification(out_dir: str, seed: int) -> None:
    for split_index, (split, per_class) in enumerate(CLS_PER_CLASS.items()):
        for cls_index, cls in enumerate(TOY_CLASSES):
            for i in range(per_class):
                rng = np.random.default_rng([seed, 0, split_index, cls_index, i])
                data = _encode_jpeg(_classification_image(rng, cls))
                _write(os.path.join(out_dir, "cls", split, cls, f"{cls}_{i:04d}.jpg"), data)


def _coco_json(scenes: List[Tuple[str, int, int, List[dict]]], first_image_id: int) -> dict:
    """COCO instances json of (file_name, height, width, objects) scenes; boxes as [x, y, w, h]."""
    images, annotations = [], []
    for offset, (file_name, height, width, objects) in enumerate(scenes):
        image_id = first_image_id + offset
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj in objects:
            x1, y1, x2, y2 = obj["bbox"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": TOY_CATEGORY_IDS[obj["category"]],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": obj["area"], "iscrowd": int(obj["crowd"]),
            })
    categories = [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(TOY_CATEGORY_IDS, TOY_CLASSES)]
    info = {"description": "resdet synthetic shapes", "version": "1.0"}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def _voc_xml(file_name: str, height: int, width: int, objects: List[dict]) -> bytes:
    """A devkit annotation: 1-based inclusive pixel boxes, tiny objects and crowds marked difficult."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        x1, y1, x2, y2 = obj["bbox"]
        difficult = obj["crowd"] or max(x2 - x1, y2 - y1) < DIFFICULT_MAX_SIDE
        node = ET.SubElement(root, "object")
        for key, value in (("name", TOY_CLASSES[obj["category"]]), ("pose", "Unspecified"), ("truncated", 0),
                           ("difficult", int(difficult))):
            ET.SubElement(node, key).text = str(value)
        box = ET.SubElement(node, "bndbox")
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, key).text = str(int(value))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _write_detection(out_dir: str, seed: int) -> None:
    voc_dir = os.path.join(out_dir, "voc", "VOC2007")
    first_index = 0
    for split_index, (split, count) in enumerate(DET_IMAGES.items()):
        scenes = []
        for i in range(first_index, first_index + count):
            rng = np.random.default_rng([seed, 1, i])
            image, objects = _detection_scene(rng, with_crowd=split == "val" and i % CROWD_EVERY == 0)
            data, stem = _encode_jpeg(image), f"{i:06d}"
            _write(os.path.join(out_dir, "coco", split, f"{stem}.jpg"), data)
            _write(os.path.join(voc_dir, "JPEGImages", f"{stem}.jpg"), data)
            xml = _voc_xml(f"{stem}.jpg", *image.shape[:2], objects)
            _write(os.path.join(voc_dir, "Annotations", f"{stem}.xml"), xml)
            scenes.append((f"{stem}.jpg", image.shape[0], image.shape[1], objects))
        coco = json.dumps(_coco_json(scenes, first_index + 1), sort_keys=True).encode()
        _write(os.path.join(out_dir, "coco", "annotations", f"instances_{split}.json"), coco)
        voc_split = ("trainval", "test")[split_index]
        ids = "".join(f"{i:06d}\n" for i in range(first_index, first_index + count))
        _write(os.path.join(voc_dir, "ImageSets", "Main", f"{voc_split}.txt"), ids.encode())
        first_index += count
    _write(os.path.join(voc_dir, LABELS_FILE), "".join(f"{c}\n" for c in TOY_CLASSES).encode())


def make_toy_data(out_dir: str, seed: int = 0) -> str:
    """Write the toy classification, COCO and VOC datasets under `out_dir`; return out_dir."""
    _write_classification(out_dir, seed)
    _write_detection(out_dir, seed)
    return out_dir


def _register_builtin() -> None:
    categories = category_metadata([{"id": i, "name": n} for i, n in zip(TOY_CATEGORY_IDS, TOY_CLASSES)])
    for split in ("train", "val"):
        register_image_folder(f"toy_cls_{split}", under_root("toy", "cls", split))
        json_file = under_root("toy", "coco", "annotations", f"instances_{split}.json")
        register_coco_instances(f"toy_coco_{split}", json_file, under_root("toy", "coco", split))
        MetadataCatalog.get(f"toy_coco_{split}").set(**categories)
    for split in ("trainval", "test"):
        register_voc(f"toy_voc_{split}", under_root("toy", "voc", "VOC2007"), split, TOY_CLASSES, 2007)


_register_builtin()
