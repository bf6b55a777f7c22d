#!/usr/bin/env python
"""Run a detector on images, folders of images or video files and write the drawn detections.

    python tools/demo.py --config configs/coco_frcnn_r50_fpn.yaml --input a.jpg photos/ clip.mp4 \
        --output out/ MODEL.WEIGHTS model_final.pth

Images are written as PNG or JPEG (the input's extension, or --image-format), videos as MP4.
"""
import argparse
import logging
import os
import sys
from typing import Iterator, List, Sequence

import cv2
import numpy as np

import resdet
from resdet.config import setup_cfg
from resdet.errors import UsageError
from resdet.utils.cli import ToolArgumentParser, run_tool
from resdet.utils.logger import setup_logger
from resdet.utils.visualizer import draw_detections

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
logger = logging.getLogger("resdet.demo")


def parse_args(argv=None) -> argparse.Namespace:
    """--config, --input PATHS, --output DIR, trailing KEY VALUE overrides."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="images, folders or videos")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="draw detections scoring at least this")
    parser.add_argument("--max-images", type=int, default=0, help="per folder; 0: all")
    parser.add_argument("--image-format", choices=("png", "jpg"), help="format of drawn images (default: the input's)")
    parser.add_argument("--min-side", type=int, default=0, metavar="PX",
                        help="enlarge smaller images to this shorter side before drawing; 0: never")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return parser.parse_args(argv)


def expand_inputs(paths: Sequence[str], max_images: int) -> List[str]:
    """Files as given; folders replaced by their images in sorted order."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            images = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
            files.extend(images[:max_images] if max_images > 0 else images)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UsageError(f"--input: no such file or folder: {path}")
    return files


def video_frames(path: str) -> Iterator[np.ndarray]:
    """BGR frames of a video file."""
    capture = cv2.VideoCapture(path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def draw_enlarged(image: np.ndarray, output: dict, class_names, score_thresh: float, min_side: int) -> np.ndarray:
    """The detections drawn on the image, first enlarged to a shorter side of `min_side` if smaller, so that
    names and scores stay legible on small images."""
    scale = min_side / min(image.shape[:2])
    if scale > 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        output = dict(output, boxes=output["boxes"] * scale)
    return draw_detections(image, output["boxes"], output["scores"], output["labels"], class_names, score_thresh)


def run(args: argparse.Namespace) -> List[str]:
    """Draw detections for every input; returns the written paths."""
    predictor = resdet.Predictor(setup_cfg(args.config, args.opts))
    os.makedirs(args.output, exist_ok=True)
    draw = lambda image, out: draw_enlarged(image, out, predictor.class_names, args.score_thresh,  # noqa: E731
                                            args.min_side)
    written = []
    for path in expand_inputs(args.input, args.max_images):
        stem, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() in VIDEO_EXTENSIONS:
            written.append(write_video(path, os.path.join(args.output, stem + ".mp4"), predictor, draw))
            continue
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise UsageError(f"--input: cannot decode image {path}")
        suffix = ext if ext.lower() in (".png", ".jpg", ".jpeg") else ".png"
        target = os.path.join(args.output, stem + ("." + args.image_format if args.image_format else suffix))
        output = predictor(image)
        cv2.imwrite(target, draw(image, output))
        logger.info("%s: %d detections >= %.2f -> %s", path, int((output["scores"] >= args.score_thresh).sum()),
                    args.score_thresh, target)
        written.append(target)
    return written


def write_video(path: str, target: str, predictor: resdet.Predictor, draw) -> str:
    """Every frame of `path` with its detections, as MP4."""
    capture = cv2.VideoCapture(path)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    capture.release()
    writer = None
    for frame in video_frames(path):
        if writer is None:
            writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
        writer.write(draw(frame, predictor(frame)))
    if writer is None:
        raise UsageError(f"--input: cannot read any frame of video {path}")
    writer.release()
    logger.info("%s -> %s", path, target)
    return target


def main(argv=None) -> int:
    """Entry point; user errors end with one line on stderr and exit code 2 (--debug: the traceback)."""
    args = parse_args(argv)
    setup_logger()
    return run_tool(run, args)


if __name__ == "__main__":
    sys.exit(main())
