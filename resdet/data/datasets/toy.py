"""The embedded synthetic shapes world, written in the real formats, and its catalog names.

`make_toy_data(out_dir, seed)` writes, deterministically (same seed, same bytes):
  out_dir/cls/{train,val}/<shape>/*.jpg       the pretraining set (ImageFolder): 10 shape classes, 1000 + 100
                                              64x64 images each, one shape in a random colour per image
  out_dir/coco/{annotations/instances_{train,val}.json, train/, val/}   1000 + 200 scenes of 128-160 px,
                                              1-4 shapes of 4 classes each, in random colours
  out_dir/voc/VOC2007/{Annotations, JPEGImages, ImageSets/Main/{trainval,test}.txt, labels.txt}
The detection images are the same scenes in both formats (VOC trainval = COCO train, test = val). As ImageNet's,
the pretraining classes can only be told apart by shape, and include the detection classes among others.
"""
import json
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from .catalog import MetadataCatalog, under_root
from .coco import category_metadata, register_coco_instances
from .image_folder import register_image_folder
from .toy_shapes import DETECTION_SHAPES, SHAPES, add_noise, background, coverage, mask_box, paint, random_colour
from .voc import LABELS_FILE, register_voc

TOY_CLASSES = DETECTION_SHAPES  # the detection classes, alphabetical
TOY_CATEGORY_IDS = [10, 20, 30, 40]  # not 0..C-1 on purpose: exercises the COCO id <-> contiguous maps
JPEG_QUALITY = 95
CLS_SIDE = 64
CLS_PER_CLASS = {"train": 1000, "val": 100}
DET_IMAGES = {"train": 1000, "val": 200}
DIFFICULT_MAX_SIDE = 16  # VOC "difficult": objects whose larger side is below this many pixels
CROWD_EVERY = 8  # every 8th val scene gets a crowd (COCO iscrowd=1, VOC difficult)
# Pretraining shapes must show in grayscale too (their classes are told apart by outline, whatever the colour).
CLS_LUMA_CONTRAST = 40.0
CLS_SHADING = 25.0


def _classification_image(rng: np.random.Generator, shape: str) -> np.ndarray:
    """One 64x64 image holding a single shape of class `shape`, 12-56 px across, anywhere, any colour."""
    image, base = background(rng, CLS_SIDE, CLS_SIDE)
    size = rng.uniform(12, CLS_SIDE - 8)
    centre = rng.uniform(size / 2, CLS_SIDE - size / 2, size=2)
    alpha = coverage(CLS_SIDE, CLS_SIDE, shape, centre, size, rng.uniform(0, 2 * np.pi), rng)
    paint(image, alpha, random_colour(rng, base, CLS_LUMA_CONTRAST), rng, CLS_SHADING)
    return add_noise(image, rng)


def _draw(image: np.ndarray, rng: np.random.Generator, colour: np.ndarray, cls_index: int, centre: np.ndarray,
          size: float) -> np.ndarray:
    """Paint one detection shape of class TOY_CLASSES[cls_index]; return its (H,W) bool mask."""
    alpha = coverage(*image.shape[:2], TOY_CLASSES[cls_index], centre, size, rng.uniform(0, 2 * np.pi), rng)
    paint(image, alpha, colour, rng)
    return alpha >= 0.5


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (K,4)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _detection_scene(rng: np.random.Generator, with_crowd: bool) -> Tuple[np.ndarray, List[dict]]:
    """One 128-160 px scene with 1-4 shapes (partial overlaps allowed) and optionally a crowd of tiny ones."""
    height, width = (int(v) for v in rng.integers(128, 161, size=2))
    image, base = background(rng, height, width)
    objects: List[dict] = []
    for _ in range(int(rng.integers(1, 5))):
        cls_index = int(rng.integers(len(TOY_CLASSES)))
        for _attempt in range(20):
            size = rng.uniform(10, 0.6 * min(height, width))
            centre = rng.uniform(size / 2, [width - size / 2, height - size / 2])
            box = np.concatenate([centre - size / 2, centre + size / 2])
            if not objects or _iou(box, np.array([o["bbox"] for o in objects])).max() < 0.3:
                break
        # a random colour, visible against the background and against the shapes it may overlap
        colour = random_colour(rng, base, avoid=[o["colour"] for o in objects])
        mask = _draw(image, rng, colour, cls_index, centre, size)
        objects.append({"bbox": mask_box(mask), "category": cls_index, "area": int(mask.sum()), "crowd": False,
                        "colour": colour})
    if with_crowd:
        objects.append(_draw_crowd(image, rng, base))
    return add_noise(image, rng), objects


def _draw_crowd(image: np.ndarray, rng: np.random.Generator, base: np.ndarray) -> dict:
    """A cluster of 5-8 tiny shapes of one class, annotated as one crowd region."""
    cls_index = int(rng.integers(len(TOY_CLASSES)))
    height, width = image.shape[:2]
    origin = rng.uniform(0, [width - 40, height - 40])
    masks = [_draw(image, rng, random_colour(rng, base), cls_index, origin + rng.uniform(4, 36, size=2),
                   rng.uniform(5, 8)) for _ in range(int(rng.integers(5, 9)))]
    box = mask_box(np.logical_or.reduce(masks))
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


def _write_classification(out_dir: str, seed: int, per_class: Dict[str, int]) -> None:
    for split_index, (split, count) in enumerate(per_class.items()):
        for cls_index, cls in enumerate(SHAPES):
            for i in range(count):
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


def _write_detection(out_dir: str, seed: int, images: Dict[str, int]) -> None:
    voc_dir = os.path.join(out_dir, "voc", "VOC2007")
    first_index = 0
    for split_index, (split, count) in enumerate(images.items()):
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


def make_toy_data(out_dir: str, seed: int = 0, cls_per_class: Optional[Dict[str, int]] = None,
                  det_images: Optional[Dict[str, int]] = None) -> str:
    """Write the toy classification, COCO and VOC datasets under `out_dir`; return out_dir.

    cls_per_class ({"train": n, "val": m} images per class) and det_images ({"train": n, "val": m} scenes)
    default to CLS_PER_CLASS and DET_IMAGES; tests pass smaller ones.
    """
    _write_classification(out_dir, seed, cls_per_class or CLS_PER_CLASS)
    _write_detection(out_dir, seed, det_images or DET_IMAGES)
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
