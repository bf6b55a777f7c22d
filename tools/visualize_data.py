#!/usr/bin/env python
"""Draw the training data: the ground-truth boxes and class names of the first N images of DATASETS.TRAIN.

    python tools/visualize_data.py --config configs/toy_frcnn_r18_fpn.yaml --output vis/ --min-side 480
    python tools/visualize_data.py --config my_data.yaml --source dataloader --output vis/ --num-images 32

--source annotation (default): the images as read from the files, every annotated box drawn in its class colour
and named, crowd and difficult boxes marked (training leaves them out). --source dataloader: the training batches
after the augmentation (INPUT.MIN_SIZE_TRAIN resizing and flips; a classifier's crops, flips and lighting), with the
boxes that training uses. A classifier's images carry their class name. The first thing to run on one's own data:
boxes off their objects, swapped classes or a wrong INPUT.FORMAT show at once.
"""
import argparse
import logging
import os
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from resdet.config import setup_cfg
from resdet.data import MetadataCatalog
from resdet.data.build import build_classification_train_loader, build_detection_train_loader, load_datasets
from resdet.data.image_io import read_image
from resdet.data.mappers import load_classification_image
from resdet.data.transforms import convert_format
from resdet.errors import UsageError
from resdet.utils.cli import ToolArgumentParser, run_tool
from resdet.utils.visualizer import draw_ground_truth

logger = logging.getLogger("resdet.visualize_data")
SOURCES = ("annotation", "dataloader")
# (name for the file, BGR uint8 image, boxes (K, 4) x1y1x2y2, labels (K,), a note per box)
Drawable = Tuple[str, np.ndarray, np.ndarray, np.ndarray, List[str]]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config, --source, --output, --num-images, --min-side and trailing KEY VALUE overrides."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--source", choices=SOURCES, default="annotation",
                        help="annotation: the files as read; dataloader: after the training augmentation")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the drawn images (PNG)")
    parser.add_argument("--num-images", type=int, default=16, metavar="N")
    parser.add_argument("--min-side", type=int, default=0, metavar="PX",
                        help="enlarge smaller images to this shorter side before drawing, so names stay legible")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return parser.parse_args(argv)


def whole_image_box(image: np.ndarray) -> np.ndarray:
    """(1, 4): a classifier's label is drawn as a box around the whole image."""
    return np.array([[0, 0, image.shape[1] - 1, image.shape[0] - 1]], dtype=np.float32)


def from_annotations(cfg, count: int) -> Iterator[Drawable]:
    """The first `count` records of DATASETS.TRAIN with all their annotations, images decoded as BGR."""
    records = load_datasets(cfg.DATASETS.TRAIN)
    for index in range(min(count, len(records))):
        record = records[index]
        name = f"{index:03d}_{os.path.splitext(os.path.basename(record.get('file_name', 'image')))[0]}"
        if "annotations" not in record:  # classification
            image = load_classification_image(record, "BGR")
            yield name, image, whole_image_box(image), np.array([record["label"]]), [""]
            continue
        annotations = record["annotations"]
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in annotations], dtype=np.int64)
        notes = ["crowd" if a.get("iscrowd", 0) else "difficult" if a.get("difficult", False) else ""
                 for a in annotations]
        yield name, read_image(record["file_name"], "BGR"), boxes, labels, notes


def _to_bgr(image_chw, image_format: str) -> np.ndarray:
    """A (3, H, W) float 0-255 tensor in `image_format` as an (H, W, 3) BGR uint8 array."""
    pixels = image_chw.permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
    return np.ascontiguousarray(convert_format(pixels, image_format, "BGR"))


def from_dataloader(cfg, count: int) -> Iterator[Drawable]:
    """The first `count` images of the training loader, after its augmentation."""
    detector = cfg.MODEL.META_ARCHITECTURE != "Classifier"
    loader = build_detection_train_loader(cfg) if detector else build_classification_train_loader(cfg)
    drawn = 0
    for batch in loader:
        items = batch if detector else [{"image": image, "labels": label[None]} for image, label in zip(*batch)]
        for item in items:
            if drawn == count:
                return
            image = _to_bgr(item["image"], cfg.INPUT.FORMAT)
            boxes = item["boxes"].numpy() if detector else whole_image_box(image)
            labels = item["labels"].numpy()
            name = f"{drawn:03d}_{os.path.splitext(os.path.basename(item.get('file_name', 'batch')))[0]}"
            yield name, image, boxes, labels, [""] * len(labels)
            drawn += 1


def enlarge(image: np.ndarray, boxes: np.ndarray, min_side: int) -> Tuple[np.ndarray, np.ndarray]:
    """The image scaled up to a shorter side of `min_side` (if smaller), the boxes with it."""
    scale = min_side / min(image.shape[:2])
    if scale <= 1:
        return image, boxes
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR), boxes * scale


def run(args: argparse.Namespace) -> List[str]:
    """Draw the images; returns the written paths."""
    if args.num_images < 1:
        raise UsageError(f"--num-images {args.num_images}: give 1 or more")
    cfg = setup_cfg(args.config, args.opts)
    class_names: Sequence[str] = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes") \
        if cfg.DATASETS.TRAIN else None
    drawables = (from_annotations if args.source == "annotation" else from_dataloader)(cfg, args.num_images)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for name, image, boxes, labels, notes in drawables:
        image, boxes = enlarge(image, boxes, args.min_side)
        path = os.path.join(args.output, f"{name}.png")
        if not cv2.imwrite(path, draw_ground_truth(image, boxes, labels, class_names, notes)):
            raise UsageError(f"could not write {path}")
        written.append(path)
    print(f"{len(written)} images ({args.source}) drawn into {args.output}")
    return written


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, draw, report."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
