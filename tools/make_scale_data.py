#!/usr/bin/env python
"""Write COCO-train-sized and ImageNet-sized index sets for measuring the data path at full scale.

    python tools/make_scale_data.py --out /tmp/scale                 # both, at full size
    python tools/make_scale_data.py --out /tmp/scale --only coco --coco-images 5000 --coco-boxes 36000

COCO: `coco/annotations/instances_train.json` with COCO train2017's counts (118,287 images, 860,001 boxes,
the 80 category ids, about 1% crowd boxes, a polygon per box so that the file is about as large as the
real one) and `coco/train/<id>.jpg`. ImageNet: `imagenet/{train,val}/<wnid>/*.JPEG` in 1000 folders.
Every image is a symbolic link to one of 64 real 640x480 (or 480x640) JPEGs, so the sets take little disk
while the loaders read, decode and augment real files. Use them with the config-only dataset names:

    DATASETS.TRAIN "('coco:/tmp/scale/coco/annotations/instances_train.json:/tmp/scale/coco/train',)"
"""
import json
import os
import sys
import time
from typing import List, Tuple

import cv2
import numpy as np

from resdet.data.datasets.coco import COCO_CATEGORY_IDS, COCO_CLASSES
from resdet.utils.cli import ToolArgumentParser, run_tool

COCO_IMAGES, COCO_BOXES, COCO_IMAGES_WITHOUT_BOXES = 118_287, 860_001, 1_021
IMAGENET_TRAIN, IMAGENET_VAL_PER_CLASS, IMAGENET_CLASSES = 1_281_167, 50, 1000
NUM_JPEGS = 64
CROWD_FRACTION = 0.01


def write_jpegs(folder: str, seed: int) -> List[Tuple[str, int, int]]:
    """NUM_JPEGS smooth random images with a few filled shapes; (path, height, width) of each."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    written = []
    for k in range(NUM_JPEGS):
        height, width = (640, 480) if k % 4 == 3 else (480, 640)
        image = cv2.resize(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8), (width, height))
        for _ in range(6):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.circle(image, centre, int(rng.integers(10, 120)), colour, -1)
        path = os.path.join(folder, f"source_{k:02d}.jpg")
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append((os.path.abspath(path), height, width))
    return written


def _link(target: str, path: str) -> None:
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)


def _boxes_per_image(rng: np.random.Generator, num_images: int, num_boxes: int, without: int) -> np.ndarray:
    """(num_images,) box counts summing to num_boxes, `without` of them zero, the others at least one."""
    with_boxes = rng.permutation(num_images)[: num_images - without]
    counts = np.zeros(num_images, dtype=np.int64)
    counts[with_boxes] = 1
    extra = rng.choice(with_boxes, size=num_boxes - len(with_boxes), replace=True)
    np.add.at(counts, extra, 1)
    return counts


def _annotations(rng: np.random.Generator, image_ids: np.ndarray, sizes: np.ndarray, counts: np.ndarray) -> List[dict]:
    """COCO annotation entries: xywh boxes inside their image, a polygon each, COCO's category ids."""
    owner = np.repeat(np.arange(len(image_ids)), counts)  # (M,) index of each box's image
    heights, widths = sizes[owner, 0], sizes[owner, 1]
    box_w = np.maximum(2.0, rng.beta(1.2, 4.0, len(owner)) * widths)
    box_h = np.maximum(2.0, rng.beta(1.2, 4.0, len(owner)) * heights)
    x = rng.uniform(0, 1, len(owner)) * (widths - box_w)
    y = rng.uniform(0, 1, len(owner)) * (heights - box_h)
    boxes = np.round(np.stack([x, y, box_w, box_h], axis=1), 2).tolist()
    categories = np.asarray(COCO_CATEGORY_IDS)[rng.integers(0, len(COCO_CATEGORY_IDS), len(owner))].tolist()
    crowd = (rng.random(len(owner)) < CROWD_FRACTION).astype(int).tolist()
    points = rng.integers(10, 45, len(owner))  # polygon vertices per box
    owners, ids = image_ids[owner].tolist(), range(1, len(owner) + 1)
    entries = []
    for k, (box, image_id, category, is_crowd, ann_id) in enumerate(zip(boxes, owners, categories, crowd, ids)):
        bx, by, bw, bh = box
        angles = np.sort(rng.uniform(0, 2 * np.pi, points[k]))
        polygon = np.round(np.stack([bx + bw / 2 * (1 + np.cos(angles)), by + bh / 2 * (1 + np.sin(angles))],
                                    axis=1).ravel(), 2).tolist()
        entries.append({"segmentation": [polygon], "area": round(bw * bh * 0.7, 2), "iscrowd": is_crowd,
                        "image_id": image_id, "bbox": box, "category_id": category, "id": ann_id})
    return entries


def write_coco(out: str, jpegs: List[Tuple[str, int, int]], num_images: int, num_boxes: int, seed: int) -> str:
    """The COCO-sized instances json and its linked images; returns the json's path."""
    rng = np.random.default_rng(seed + 1)
    image_dir, annotation_dir = os.path.join(out, "coco", "train"), os.path.join(out, "coco", "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(annotation_dir, exist_ok=True)
    image_ids = np.sort(rng.choice(581_930, size=num_images, replace=False))
    sources = rng.integers(0, len(jpegs), num_images)
    sizes = np.array([jpegs[s][1:] for s in sources], dtype=np.float64)  # (N,2) height, width
    images = []
    for image_id, source in zip(image_ids.tolist(), sources.tolist()):
        file_name = f"{image_id:012d}.jpg"
        _link(jpegs[source][0], os.path.join(image_dir, file_name))
        images.append({"license": 1, "file_name": file_name, "height": jpegs[source][1], "width": jpegs[source][2],
                       "id": image_id, "date_captured": "2013-11-14 11:18:45"})
    without = min(num_images - 1, round(num_images * COCO_IMAGES_WITHOUT_BOXES / COCO_IMAGES))
    counts = _boxes_per_image(rng, num_images, max(num_boxes, num_images - without), without)
    categories = [{"supercategory": "thing", "id": i, "name": n} for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES)]
    data = {"info": {"description": "COCO-sized index set"}, "licenses": [], "images": images,
            "annotations": _annotations(rng, image_ids, sizes, counts), "categories": categories}
    path = os.path.join(annotation_dir, "instances_train.json")
    with open(path + ".tmp", "w") as file:
        json.dump(data, file, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    return path


def write_imagenet(out: str, jpegs: List[Tuple[str, int, int]], num_train: int, val_per_class: int) -> None:
    """imagenet/{train,val}/<wnid>/<wnid>_<k>.JPEG links, num_train training images over 1000 folders."""
    per_class = np.full(IMAGENET_CLASSES, num_train // IMAGENET_CLASSES)
    per_class[: num_train % IMAGENET_CLASSES] += 1
    for split, counts in (("train", per_class), ("val", np.full(IMAGENET_CLASSES, val_per_class))):
        for label, count in enumerate(counts.tolist()):
            wnid = f"n{label:08d}"
            folder = os.path.join(out, "imagenet", split, wnid)
            os.makedirs(folder, exist_ok=True)
            for k in range(count):
                _link(jpegs[(label + k) % len(jpegs)][0], os.path.join(folder, f"{wnid}_{k}.JPEG"))


def main() -> None:
    """Write the sets chosen by --only to --out."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--only", choices=("coco", "imagenet"), help="write only this set")
    parser.add_argument("--coco-images", type=int, default=COCO_IMAGES, help="COCO-format images")
    parser.add_argument("--coco-boxes", type=int, default=COCO_BOXES, help="COCO-format boxes")
    parser.add_argument("--imagenet-images", type=int, default=IMAGENET_TRAIN, help="ImageNet training images")
    parser.add_argument("--imagenet-val-per-class", type=int, default=IMAGENET_VAL_PER_CLASS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.coco_images < 2 or args.coco_boxes < 1 or args.imagenet_images < IMAGENET_CLASSES:
        parser.error("--coco-images >= 2, --coco-boxes >= 1 and --imagenet-images >= 1000")
    jpegs = write_jpegs(os.path.join(args.out, "jpegs"), args.seed)
    if args.only in (None, "coco"):
        start = time.perf_counter()
        path = write_coco(args.out, jpegs, args.coco_images, args.coco_boxes, args.seed)
        print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB in {time.perf_counter() - start:.0f} s")
    if args.only in (None, "imagenet"):
        start = time.perf_counter()
        write_imagenet(args.out, jpegs, args.imagenet_images, args.imagenet_val_per_class)
        print(f"{os.path.join(args.out, 'imagenet')}: written in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(run_tool(main))
