"""An ImageNet stand-in: 40 classes of textured shapes, written in the ImageNet folder layout.

A class is a shape (the ten toy outlines) filled with one of four textures (solid, stripes, dots, outline), so a
network has to see both the fine pattern and the whole outline, at any rotation, colour and scale. Each image
holds one shape of its class, 50-100 px across, on a textured background; in a quarter of the images a smaller
decoy shape of a random class stands beside it (the class is the larger shape), and a few strokes and blobs of
clutter and pixel noise cover everything. Colours carry no class information. Images are 112 px high and 112-144
px wide (or the transpose), so the loader's shorter-side resize and crop matter as on ImageNet.

Why 40 classes, not ImageNet's 1000 or a round 100: what a 2-core budget can train is about 100k samples per
network. With 100 such classes (2.6k images each) a ResNet-18 was still at 92% top-1 error after 800 iterations of
64 (51k samples): SGD from scratch needs a few thousand samples of a class before its error moves.

Layout (what the ImageFolder loader reads as `imagenet_train` / `imagenet_val`)::

    imagenet/train/<wnid>/<wnid>_<n>.JPEG          # TRAIN_PER_CLASS each
    imagenet/val/<wnid>/ILSVRC2012_val_<n>.JPEG    # VAL_PER_CLASS each, the prepared val layout
    imagenet/synset_words.txt                      # "<wnid> <shape>, <texture>" per class, as ILSVRC's devkit

The wnids are made up (n00000000...n00000039, in class order: shape-major). Images are drawn in chunks by a
process pool; each chunk has its own generator seeded by (seed, split, chunk), so the files do not depend on the
number of processes.
"""
import os
from concurrent.futures import ProcessPoolExecutor
from typing import List, Tuple

import cv2
import numpy as np

from .toy_shapes import SHAPES, add_noise, background, coverage, paint, random_colour

TEXTURES = ["solid", "stripes", "dots", "outline"]
CLASSES = [(shape, texture) for shape in SHAPES for texture in TEXTURES]
FOLDER = "imagenet"
TRAIN_PER_CLASS = 650
VAL_PER_CLASS = 60
SHORT_SIDE = 112
MAX_LONG_SIDE = 144
JPEG_QUALITY = 90
_CHUNK = 500  # images per pool task
_SHADING = 30.0
DECOY_PROBABILITY = 0.25
SIZE_RANGE = (50.0, 100.0)  # the shape's nominal diameter, px
MAX_ROTATION = 180.0  # degrees either way
CLUTTER_BEFORE, CLUTTER_AFTER = (1, 4), (0, 2)  # strokes and blobs under and over the shapes


def wnid(label: int) -> str:
    """The made-up WordNet id of class `label`."""
    return f"n{label:08d}"


def _texture_mask(texture: str, height: int, width: int, centre: np.ndarray, angle: float, period: float,
                  alpha: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: where the texture's first colour goes, in the shape's own rotated frame."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)  # along the shape's axis
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if texture == "solid":
        return np.ones_like(u)
    if texture == "stripes":
        return ((u / period) % 1 < 0.5).astype(np.float32)
    if texture == "dots":
        fu, fv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if texture == "outline":  # a band along the edge; the inside shows the background
        band = max(2, int(round(period / 2)))
        inner = cv2.erode(alpha, np.ones((2 * band + 1, 2 * band + 1), np.uint8))
        return np.clip(1.0 - inner / np.maximum(alpha, 1e-6), 0, 1)
    raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")


def _draw_shape(image: np.ndarray, base: np.ndarray, label: int, size: float, centre: np.ndarray,
                rng: np.random.Generator) -> None:
    """Paint one textured shape of class `label` into image (H, W, 3) float32 BGR."""
    shape, texture = CLASSES[label]
    height, width = image.shape[:2]
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    alpha = coverage(height, width, shape, centre, size, angle, rng)
    pattern = _texture_mask(texture, height, width, centre, angle, size * rng.uniform(0.12, 0.18), alpha)
    first = random_colour(rng, base, 25.0)
    if texture == "outline":
        paint(image, alpha * pattern, first, rng, _SHADING)
        return
    second = random_colour(rng, base, 25.0, avoid=(first,))
    paint(image, alpha * pattern, first, rng, _SHADING)
    paint(image, alpha * (1 - pattern), second, rng, _SHADING)


def _clutter(image: np.ndarray, rng: np.random.Generator, base: np.ndarray, count: int) -> None:
    """`count` strokes or blobs in random colours: edges that belong to no class."""
    height, width = image.shape[:2]
    for _ in range(count):
        colour = tuple(float(v) for v in random_colour(rng, base))
        start = rng.uniform(0, (width, height))
        if rng.random() < 0.5:
            end = start + rng.normal(0, 20, size=2)
            cv2.line(image, tuple(int(v) for v in start), tuple(int(v) for v in end), colour,
                     int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            axes = tuple(int(v) for v in rng.integers(2, 9, size=2))
            cv2.ellipse(image, tuple(int(v) for v in start), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1,
                        cv2.LINE_AA)


def toy_imagenet_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """One uint8 BGR image of class `label`: shorter side SHORT_SIDE, longer up to MAX_LONG_SIDE."""
    long_side = int(rng.integers(SHORT_SIDE, MAX_LONG_SIDE + 1))
    height, width = (SHORT_SIDE, long_side) if rng.random() < 0.5 else (long_side, SHORT_SIDE)
    image, base = background(rng, height, width)
    _clutter(image, rng, base, int(rng.integers(*CLUTTER_BEFORE)))
    size = rng.uniform(*SIZE_RANGE)
    room = np.array([width, height], np.float32)
    centre = rng.uniform(size / 2 - 8, room - size / 2 + 8)  # may cross the border a little
    if rng.random() < DECOY_PROBABILITY:  # a decoy of a random class, at most 0.55 the size, beside the shape
        decoy_size = size * rng.uniform(0.3, 0.55)
        offset = rng.normal(0, 1, size=2)
        decoy_centre = centre + offset / np.linalg.norm(offset) * (size + decoy_size) / 2 * rng.uniform(0.8, 1.1)
        _draw_shape(image, base, int(rng.integers(len(CLASSES))), decoy_size, decoy_centre, rng)
    _draw_shape(image, base, label, size, centre, rng)
    _clutter(image, rng, base, int(rng.integers(*CLUTTER_AFTER)))
    return add_noise(image, rng)


def _write_chunk(task: Tuple[str, str, int, int, int, List[Tuple[int, int]]]) -> int:
    """Draw and write one chunk of (label, index) images; returns how many were written."""
    folder, split, seed, split_index, chunk_index, items = task
    rng = np.random.default_rng([seed, split_index, chunk_index])
    for label, index in items:
        name = f"{wnid(label)}_{index}.JPEG" if split == "train" else f"ILSVRC2012_val_{index:08d}.JPEG"
        path = os.path.join(folder, split, wnid(label), name)
        if not cv2.imwrite(path, toy_imagenet_image(rng, label), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {path}")
    return len(items)


def _tasks(folder: str, seed: int, split_index: int, split: str, per_class: int, offset: int) -> list:
    """The split's images as chunks; val images are numbered across classes, as ILSVRC2012's are."""
    labels = np.random.default_rng([seed, split_index, 1 << 20]).permutation(np.repeat(np.arange(len(CLASSES)),
                                                                                         per_class))
    items = [(int(label), offset + i + 1) for i, label in enumerate(labels)]
    return [(folder, split, seed, split_index, start // _CHUNK, items[start:start + _CHUNK])
            for start in range(0, len(items), _CHUNK)]


def make_toy_imagenet(out_dir: str, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS,
                      val_per_class: int = VAL_PER_CLASS, processes: int = 0) -> str:
    """Write OUT/imagenet/{train,val}/<wnid>/*.JPEG and synset_words.txt; return OUT/imagenet.

    processes: pool size (0: one per core)."""
    if train_per_class <= 0 or val_per_class <= 0:
        raise ValueError(f"train_per_class and val_per_class must be positive; got {train_per_class} and "
                         f"{val_per_class}")
    folder = os.path.join(out_dir, FOLDER)
    for split in ("train", "val"):
        for label in range(len(CLASSES)):
            os.makedirs(os.path.join(folder, split, wnid(label)), exist_ok=True)
    with open(os.path.join(folder, "synset_words.txt"), "w") as f:
        f.writelines(f"{wnid(label)} {shape}, {texture}\n" for label, (shape, texture) in enumerate(CLASSES))
    tasks = (_tasks(folder, seed, 0, "train", train_per_class, 0)
             + _tasks(folder, seed, 1, "val", val_per_class, 0))
    workers = processes or os.cpu_count() or 1
    if workers == 1:
        for task in tasks:
            _write_chunk(task)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_chunk, tasks))
    return folder
