"""A CIFAR-10 stand-in: the ten toy shapes at 32x32, written as the official python batches (cifar-10-batches-py).

Each image holds one shape of its class (random colour and shading, 10-30 px across, any rotation, anywhere
it fits) on a textured background, with clutter: a few small strokes and blobs in other random colours (in
half the images one of them crosses the shape), and pixel noise. Colour carries no class information, so the
class is in the outline alone; at 32 px some outlines (star and cross, ellipse and crescent, circle and ring
when small) are close, which keeps a ResNet-20 short of 100% training accuracy on a short schedule.

Layout (what cifar.py reads, as CIFAR-10 writes it): five `data_batch_{1..5}` and one `test_batch`, each a
protocol-2 pickle of {b"batch_label", b"labels": [int], b"data": (n, 3072) uint8 rows of 1024 R, 1024 G,
1024 B values, b"filenames": [bytes]}, and `batches.meta` = {b"label_names", b"num_cases_per_batch",
b"num_vis"}. Classes are balanced in every batch and in each half of a batch, so the loader's 45k/5k split
(the last tenth of the training images is validation) is balanced too; the order is shuffled.
"""
import os
import pickle
from typing import List, Tuple

import cv2
import numpy as np

from .cifar import VAL_FRACTION
from .toy_shapes import SHAPES, add_noise, background, coverage, paint, random_colour

SIDE = 32
NUM_TRAIN_BATCHES = 5
TRAIN_PER_CLASS = 5000  # the paper's sizes: 50k training images in five batches of 10k
TEST_PER_CLASS = 1000  # and a 10k test batch
FOLDER = "cifar-10-batches-py"
_SHADING = 40.0  # brightness ramp across a shape, so it is not one flat colour
_LUMA_CONTRAST = 25.0  # the shape stays visible in brightness as well as in colour


def _clutter(image: np.ndarray, rng: np.random.Generator, base: np.ndarray, count: int) -> None:
    """`count` small strokes or blobs in random colours: edges that belong to no class."""
    for _ in range(count):
        colour = tuple(float(v) for v in random_colour(rng, base))
        if rng.random() < 0.5:
            start = rng.uniform(0, SIDE, size=2)
            end = start + rng.normal(0, 6, size=2)
            cv2.line(image, tuple(int(v) for v in start), tuple(int(v) for v in end), colour, 1, cv2.LINE_AA)
        else:
            centre = tuple(int(v) for v in rng.uniform(0, SIDE, size=2))
            axes = tuple(int(v) for v in rng.integers(1, 4, size=2))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)


def toy_cifar_image(rng: np.random.Generator, shape: str) -> np.ndarray:
    """One (32, 32, 3) uint8 RGB image of class `shape`."""
    image, base = background(rng, SIDE, SIDE)
    _clutter(image, rng, base, int(rng.integers(1, 4)))
    size = rng.uniform(10, SIDE - 2)
    centre = rng.uniform(size / 2 - 2, SIDE - size / 2 + 2, size=2)  # may cross the border a little
    alpha = coverage(SIDE, SIDE, shape, centre, size, rng.uniform(0, 2 * np.pi), rng)
    paint(image, alpha, random_colour(rng, base, _LUMA_CONTRAST), rng, _SHADING)
    if rng.random() < 0.5:  # half the shapes are partly occluded by one more piece of clutter
        _clutter(image, rng, base, 1)
    return add_noise(image, rng)[..., ::-1]  # the toy world draws BGR; CIFAR stores RGB


def _images(rng: np.random.Generator, per_class: int) -> Tuple[np.ndarray, np.ndarray]:
    """(n, 3072) uint8 CIFAR rows and (n,) labels, `per_class` images of every class, shuffled."""
    labels = rng.permutation(np.repeat(np.arange(len(SHAPES)), per_class))
    rows = np.stack([toy_cifar_image(rng, SHAPES[label]).transpose(2, 0, 1).reshape(-1) for label in labels])
    return rows, labels


def _write_batch(path: str, title: str, rows: np.ndarray, labels: np.ndarray, first_index: int) -> None:
    names = [f"{SHAPES[label]}_{first_index + i:06d}.png".encode() for i, label in enumerate(labels)]
    batch = {b"batch_label": title.encode(), b"labels": [int(v) for v in labels], b"data": rows,
             b"filenames": names}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)  # the protocol of the official files


def _balanced_split(rows: np.ndarray, labels: np.ndarray, parts: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """`parts` slices with the same number of images of each class (per_class must divide by parts)."""
    order = np.argsort(labels, kind="stable")
    per_part = np.stack(np.split(order.reshape(len(SHAPES), -1), parts, axis=1), axis=0).reshape(parts, -1)
    # keep the shuffled order inside each part: sort its indices
    return [(rows[np.sort(part)], labels[np.sort(part)]) for part in per_part]


def make_toy_cifar(out_dir: str, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS,
                   test_per_class: int = TEST_PER_CLASS) -> str:
    """Write OUT/cifar-10-batches-py; return that folder. train_per_class must be a multiple of 10."""
    if train_per_class <= 0 or train_per_class % VAL_FRACTION or test_per_class <= 0:
        raise ValueError(f"train_per_class must be a positive multiple of {VAL_FRACTION} and test_per_class "
                         f"positive; got {train_per_class} and {test_per_class}")
    folder = os.path.join(out_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    train_rng, test_rng = (np.random.default_rng([seed, part]) for part in (0, 1))
    train_rows, train_labels = _images(train_rng, train_per_class)
    first_index = 0
    tenths = _balanced_split(train_rows, train_labels, VAL_FRACTION)
    halves_per_batch = VAL_FRACTION // NUM_TRAIN_BATCHES
    for number in range(1, NUM_TRAIN_BATCHES + 1):
        halves = tenths[(number - 1) * halves_per_batch:number * halves_per_batch]
        rows, labels = (np.concatenate([half[i] for half in halves]) for i in (0, 1))
        _write_batch(os.path.join(folder, f"data_batch_{number}"), f"training batch {number} of 5",
                     rows, labels, first_index)
        first_index += len(labels)
    test_rows, test_labels = _images(test_rng, test_per_class)
    _write_batch(os.path.join(folder, "test_batch"), "testing batch 1 of 1", test_rows, test_labels, 0)
    meta = {b"label_names": [name.encode() for name in SHAPES],
            b"num_cases_per_batch": train_per_class * len(SHAPES) // NUM_TRAIN_BATCHES, b"num_vis": SIDE * SIDE * 3}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder
