"""Anchors against hand-computed cell anchors and grid shifts, and against torchvision's AnchorGenerator."""
import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from resdet.modeling.detector.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_by_hand():
    anchors = cell_anchors([32, 64], [0.5, 1.0], round_to_int=False)
    # ratio-major: (0.5, 32), (0.5, 64), (1, 32), (1, 64); ratio = h / w, area = size^2
    w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    expected = torch.tensor([[-w / 2, -h / 2, w / 2, h / 2], [-w, -h, w, h], [-16, -16, 16, 16], [-32, -32, 32, 32]])
    assert torch.allclose(anchors, expected, atol=1e-4)
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    assert torch.allclose(widths * heights, torch.tensor([32.0**2, 64.0**2, 32.0**2, 64.0**2]))
    rounded = cell_anchors([32], [0.5], round_to_int=True)
    assert rounded.tolist() == [[-23.0, -11.0, 23.0, 11.0]]  # 22.63 -> 23, 11.31 -> 11


def test_grid_shifts_row_major_with_offset():
    generator = AnchorGenerator([[16]], [[1.0]], strides=[16], offset=0.5)
    feature = torch.zeros(1, 1, 2, 3)
    (anchors,) = generator([feature], (32, 48))
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    expected = torch.tensor([[8, 8], [24, 8], [40, 8], [8, 24], [24, 24], [40, 24]], dtype=torch.float32)
    assert torch.equal(centres, expected)
    assert torch.equal(anchors[0], torch.tensor([0.0, 0.0, 16.0, 16.0]))


def test_anchors_of_a_cell_are_contiguous():
    generator = AnchorGenerator([[32, 64]], [[0.5, 1.0, 2.0]], strides=[16])
    (anchors,) = generator([torch.zeros(1, 1, 2, 2)], (32, 32))
    assert anchors.shape == (2 * 2 * 6, 4)
    cell = cell_anchors([32, 64], [0.5, 1.0, 2.0], round_to_int=False)
    assert torch.equal(anchors[6:12], cell + torch.tensor([16.0, 0.0, 16.0, 0.0]))  # second cell: x + 16


@pytest.mark.parametrize("sizes,ratios,grids", [
    ([[32], [64], [128], [256], [512]], [[0.5, 1.0, 2.0]], [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]),
    ([[32, 64, 128, 256, 512]], [[0.5, 1.0, 2.0]], [(6, 10)]),
])
def test_matches_torchvision_anchor_generator(sizes, ratios, grids):
    image_shape = (96, 160)
    strides = [4, 8, 16, 32, 64][: len(grids)] if len(grids) > 1 else [16]
    ours = AnchorGenerator(sizes, ratios, strides, round_cell_anchors=True, stride_from_image=True)
    tv_sizes = tuple(tuple(s) for s in sizes)
    reference = TVAnchorGenerator(tv_sizes, tuple(tuple(ratios[0]) for _ in tv_sizes))
    features = [torch.zeros(1, 4, *g) for g in grids]
    images = ImageList(torch.zeros(1, 3, *image_shape), [image_shape])
    assert torch.equal(torch.cat(ours(features, image_shape)), reference(images, features)[0])


def test_nominal_strides_and_cache():
    generator = AnchorGenerator([[32], [64]], [[1.0]], strides=[32, 64])
    features = [torch.zeros(1, 1, 3, 5), torch.zeros(1, 1, 2, 3)]  # 96x160 padded: p6 is 2x3 (stride 48/53.3)
    first = generator(features, (96, 160))
    assert first[1][1].tolist() == [32.0, -32.0, 96.0, 32.0]  # nominal stride 64, not 160 // 3 = 53
    assert generator(features, (96, 160))[0] is first[0]  # cached


def test_level_count_errors():
    with pytest.raises(ValueError, match="SIZES"):
        AnchorGenerator([[32], [64]], [[1.0]], strides=[4, 8, 16])
    generator = AnchorGenerator([[32]], [[1.0]], strides=[4, 8])
    with pytest.raises(ValueError, match="feature maps"):
        generator([torch.zeros(1, 1, 2, 2)], (8, 8))
