"""Drawing the toy world: textured backgrounds and anti-aliased shapes in random colours.

Every class is told apart by its outline alone: colours are drawn at random for each shape, so a network
trained on these images has to learn edges, corners and curvature, the way ImageNet's classes make a
network learn shape and texture. Each shape is rendered as an anti-aliased coverage mask (0..1), which
also gives its pixel mask and box.
"""
from typing import Sequence, Tuple

import cv2
import numpy as np

# The pretraining classes, alphabetical (ImageFolder's order). The detection scenes use the first four of
# DETECTION_SHAPES, which are among them.
SHAPES = ["arrow", "circle", "crescent", "cross", "ellipse", "l_shape", "ring", "square", "star", "triangle"]
DETECTION_SHAPES = ["circle", "cross", "square", "triangle"]

_SHIFT = 4  # sub-pixel vertex precision of OpenCV's drawing (coordinates times 2^4)
_LUMA_BGR = np.array([0.114, 0.587, 0.299])  # ITU-R BT.601 luma of a BGR colour


def _regular_polygon(corners: int) -> np.ndarray:
    angles = np.deg2rad(np.arange(corners) * 360 / corners - 90)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    angles = np.deg2rad(np.arange(2 * points) * 180 / points - 90)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Unit polygons (radius about 1, centred on 0) of the polygonal classes.
_POLYGONS = {
    "arrow": np.array([[-1, -0.3], [0.1, -0.3], [0.1, -0.8], [1, 0], [0.1, 0.8], [0.1, 0.3], [-1, 0.3]]),
    "cross": np.array([[-1, -1 / 3], [-1 / 3, -1 / 3], [-1 / 3, -1], [1 / 3, -1], [1 / 3, -1 / 3], [1, -1 / 3],
                       [1, 1 / 3], [1 / 3, 1 / 3], [1 / 3, 1], [-1 / 3, 1], [-1 / 3, 1 / 3], [-1, 1 / 3]]),
    "l_shape": np.array([[-0.7, -1], [-0.2, -1], [-0.2, 0.5], [0.7, 0.5], [0.7, 1], [-0.7, 1]]),
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.8,
    "star": _star(),
    "triangle": _regular_polygon(3),
}


def _fixed(point: np.ndarray) -> Tuple[int, int]:
    return tuple(int(round(v * (1 << _SHIFT))) for v in point)


def _disk(mask: np.ndarray, centre: np.ndarray, radius: float, value: int) -> None:
    cv2.circle(mask, _fixed(centre), int(round(radius * (1 << _SHIFT))), value, -1, cv2.LINE_AA, _SHIFT)


def coverage(height: int, width: int, shape: str, centre: np.ndarray, size: float, angle: float,
             rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much of each pixel the shape covers; `size` is its nominal diameter (the
    outlines of _POLYGONS have radius about 1; a square's corners reach 0.8 * sqrt(2))."""
    mask = np.zeros((height, width), np.uint8)  # OpenCV anti-aliases 8-bit images only: 255 is full coverage
    radius = size / 2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if shape in _POLYGONS:
        points = _POLYGONS[shape] @ rotation.T * radius + centre
        cv2.fillPoly(mask, np.round(points * (1 << _SHIFT)).astype(np.int32)[None], 255, cv2.LINE_AA, _SHIFT)
    elif shape == "circle":
        _disk(mask, centre, radius, 255)
    elif shape == "ring":
        _disk(mask, centre, radius, 255)
        _disk(mask, centre, 0.55 * radius, 0)
    elif shape == "crescent":
        _disk(mask, centre, radius, 255)
        _disk(mask, centre + rotation @ np.array([0.45 * radius, 0.0]), 0.85 * radius, 0)
    elif shape == "ellipse":
        axes = (int(round(radius * (1 << _SHIFT))), int(round(radius * rng.uniform(0.35, 0.55) * (1 << _SHIFT))))
        cv2.ellipse(mask, _fixed(centre), axes, float(np.rad2deg(angle)), 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    else:
        raise ValueError(f"unknown toy shape {shape!r}; known: {SHAPES}")
    return mask.astype(np.float32) / 255.0


def background(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """A textured background (H, W, 3) float32 BGR: base colour plus smooth blotches; returns it and the base."""
    base = rng.uniform(40, 215, size=3)
    blotches = rng.normal(0, 35, size=(max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    texture = cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    return base.astype(np.float32) + texture, base


def random_colour(rng: np.random.Generator, base: np.ndarray, min_luma_contrast: float = 0.0,
                  avoid: Sequence[np.ndarray] = ()) -> np.ndarray:
    """A uniformly random BGR colour far enough from the background's base colour, and from the colours in
    `avoid` (shapes it may overlap), to be seen (summed channel difference >= 150); if asked, also differing
    from the base in brightness, so the shape shows in grayscale too."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        difference = colour - base
        visible = all(np.abs(colour - other).sum() >= 150 for other in (base, *avoid))
        if visible and abs(difference @ _LUMA_BGR) >= min_luma_contrast:
            return colour


def paint(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray, rng: np.random.Generator,
          shading: float = 0.0) -> None:
    """Blend `colour` into image (H, W, 3) float32 where alpha (H, W) covers it, with a random linear
    brightness ramp of about +-shading across the image, so a shape need not be one flat colour."""
    fill = np.broadcast_to(colour.astype(np.float32), image.shape)
    if shading:
        height, width = alpha.shape
        slope = rng.normal(0, 1, size=2) * shading / max(height, width)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        fill = fill + (slope[0] * (xs - width / 2) + slope[1] * (ys - height / 2))[..., None]
    image *= 1 - alpha[..., None]
    image += fill * alpha[..., None]


def add_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel noise, then uint8."""
    return np.clip(image + rng.normal(0, 6, size=image.shape), 0, 255).astype(np.uint8)


def mask_box(mask: np.ndarray) -> list:
    """[x1, y1, x2, y2] in continuous coordinates of a non-empty bool mask: pixel (r, c) spans [c, c+1) x [r, r+1)."""
    cols, rows = np.nonzero(mask.any(axis=0))[0], np.nonzero(mask.any(axis=1))[0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
