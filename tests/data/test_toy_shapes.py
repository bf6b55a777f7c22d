"""The toy world's drawing: shape areas against the geometry of each outline, colours that stay visible."""
import math

import numpy as np
import pytest

from resdet.data.datasets.toy_shapes import SHAPES, coverage, mask_box, random_colour

SIZE = 60.0  # outer diameter in pixels, on a 100x100 canvas
RADIUS = SIZE / 2
# (area, perimeter) from each outline's geometry (radius r = SIZE / 2): a square of side 1.6 r; a plus of arm
# width 2r/3 across 2r; an equilateral triangle inscribed in the circle; a ring whose hole has radius 0.55 r.
GEOMETRY = {
    "circle": (math.pi * RADIUS ** 2, 2 * math.pi * RADIUS),
    "square": ((1.6 * RADIUS) ** 2, 4 * 1.6 * RADIUS),
    "cross": (20 / 9 * RADIUS ** 2, 8 * RADIUS),
    "triangle": (3 * math.sqrt(3) / 4 * RADIUS ** 2, 3 * math.sqrt(3) * RADIUS),
    "ring": (math.pi * RADIUS ** 2 * (1 - 0.55 ** 2), 2 * math.pi * RADIUS * 1.55),
}


@pytest.mark.parametrize("shape", sorted(GEOMETRY))
def test_coverage_area_matches_geometry(shape):
    alpha = coverage(100, 100, shape, np.array([50.0, 50.0]), SIZE, 0.3, np.random.default_rng(0))
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert 0 < alpha[(alpha > 0) & (alpha < 1)].size  # anti-aliased edges
    area, perimeter = GEOMETRY[shape]
    # the drawing is the outline's area up to its anti-aliased edge: less than one pixel along the perimeter
    assert abs(alpha.sum() - area) < perimeter


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_fits_its_diameter(shape):
    rng = np.random.default_rng(1)
    alpha = coverage(100, 100, shape, np.array([50.0, 50.0]), SIZE, rng.uniform(0, 2 * np.pi), rng)
    x1, y1, x2, y2 = mask_box(alpha >= 0.5)
    # about its nominal diameter (a square's corners reach 0.8 * sqrt(2) of the radius), and not a speck
    assert 0.4 * SIZE <= max(x2 - x1, y2 - y1) <= 0.8 * math.sqrt(2) * SIZE + 2


def test_unknown_shape_is_named():
    with pytest.raises(ValueError, match="hexagon"):
        coverage(10, 10, "hexagon", np.array([5.0, 5.0]), 6.0, 0.0, np.random.default_rng(0))


def test_random_colours_stay_visible_and_spread_over_hues():
    rng = np.random.default_rng(2)
    base, other = np.array([100.0, 150.0, 200.0]), np.array([30.0, 30.0, 30.0])
    luma = np.array([0.114, 0.587, 0.299])
    colours = np.array([random_colour(rng, base, min_luma_contrast=40, avoid=[other]) for _ in range(300)])
    assert (np.abs(colours - base).sum(axis=1) >= 150).all() and (np.abs(colours - other).sum(axis=1) >= 150).all()
    assert (np.abs((colours - base) @ luma) >= 40).all()
    # no colour family dominates: each channel is the largest for a fair share of the colours
    shares = np.bincount(colours.argmax(axis=1), minlength=3) / len(colours)
    assert shares.min() > 0.15
