"""Transforms checked against hand computations."""
import numpy as np
import pytest

from resdet.data import transforms as T

# AlexNet / fb.resnet.torch ImageNet PCA (RGB, 0-1 scale), written out independently of the module.
EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def _ramp(height, width, channels=3):
    """An image whose every pixel is distinct: value = 10 * (row * width + col) + channel (as int32)."""
    rows, cols, chans = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    return (10 * (rows * width + cols) + chans).astype(np.int32)


def test_hflip_boxes():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 100, 5]], dtype=np.float32)
    np.testing.assert_array_equal(T.hflip_boxes(boxes, 100), [[70, 20, 90, 40], [0, 0, 100, 5]])


def test_resize_with_boxes_and_shortest_edge():
    assert T.shortest_edge_size(100, 200, 50, 1000) == (50, 100)
    assert T.shortest_edge_size(100, 400, 200, 600) == (150, 600)  # the long side caps the scale at 1.5
    assert T.shortest_edge_size(300, 200, 100, 1000) == (150, 100)
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 20, 30, 40]], dtype=np.float32)
    resized, scaled = T.resize_with_boxes(image, boxes, 50, 150)
    assert resized.shape == (50, 150, 3)
    np.testing.assert_allclose(scaled, [[7.5, 10, 22.5, 20]])


def test_choose_min_size():
    rng = np.random.default_rng(0)
    assert {T.choose_min_size((96, 128), "choice", rng) for _ in range(50)} == {96, 128}
    drawn = {T.choose_min_size((96, 100), "range", rng) for _ in range(200)}
    assert drawn == set(range(96, 101))
    with pytest.raises(ValueError, match="MIN_SIZE_TRAIN_SAMPLING"):
        T.choose_min_size((96,), "bogus", rng)


def test_center_crop_and_ten_crop_positions():
    image = _ramp(6, 8)
    np.testing.assert_array_equal(T.center_crop(image, 4), image[1:5, 2:6])
    crops = T.ten_crop(image, 4)
    assert crops.shape == (10, 4, 4, 3)
    expected = [image[0:4, 0:4], image[0:4, 4:8], image[2:6, 0:4], image[2:6, 4:8], image[1:5, 2:6]]
    for i, window in enumerate(expected):
        np.testing.assert_array_equal(crops[i], window)
        np.testing.assert_array_equal(crops[i + 5], window[:, ::-1])


def test_resize_shorter_side():
    assert T.resize_shorter_side(np.zeros((100, 150, 3), np.uint8), 64).shape == (64, 96, 3)
    assert T.resize_shorter_side(np.zeros((150, 100, 3), np.uint8), 256).shape == (384, 256, 3)


def test_cifar_pad_and_crop():
    image = (_ramp(32, 32) % 250 + 1).astype(np.uint8)  # no zero pixels
    padded = T.pad_zeros(image, 4)
    assert padded.shape == (40, 40, 3)
    assert padded[:4].max() == 0 and padded[:, -4:].max() == 0 and (padded[4:36, 4:36] == image).all()
    seen = set()
    for seed in range(60):
        out = T.cifar_train_augment(image, 4, 32, np.random.default_rng(seed))
        assert out.shape == (32, 32, 3)
        matches = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)
                   if (out == (padded[top:top + 32, left:left + 32][:, ::-1] if flip else
                               padded[top:top + 32, left:left + 32])).all()]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len({m[2] for m in seen}) == 2 and len(seen) > 30  # both flips, many offsets


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_pca_lighting_adds_eigvec_times_alpha_eigval(image_format):
    image = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    out = T.pca_lighting(image, 0.1, np.random.default_rng(3), image_format)
    alpha = np.random.default_rng(3).normal(0.0, 0.1, size=3)
    rgb = EIGVEC @ (alpha * EIGVAL) * 255
    expected = rgb if image_format == "RGB" else rgb[::-1]
    np.testing.assert_allclose(out - image.astype(np.float32), np.broadcast_to(expected, image.shape), atol=1e-4)


def test_imagenet_train_augment_shapes():
    image = np.full((100, 150, 3), 128, np.uint8)
    for seed in range(5):
        out = T.imagenet_train_augment(image, (64, 80), 56, 0.1, np.random.default_rng(seed), "BGR")
        assert out.shape == (56, 56, 3) and out.dtype == np.float32
        assert np.ptp(out.reshape(-1, 3), axis=0).max() < 1e-3  # a flat image stays flat per channel


def test_convert_format():
    image = _ramp(2, 2)
    np.testing.assert_array_equal(T.convert_format(image, "RGB", "BGR")[..., 0], image[..., 2])
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        T.convert_format(image, "RGB", "YUV")


def test_shift_hue_against_colorsys():
    """Hue rotation by an independent HSV implementation (colorsys, on one pixel of each colour)."""
    import colorsys

    rgb = np.array([[[200, 40, 40], [40, 200, 90], [30, 60, 220], [128, 128, 128]]], dtype=np.uint8)
    shifted = T.shift_hue(rgb, 90, "RGB")
    for (r, g, b), got in zip(rgb[0] / 255.0, shifted[0]):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        expected = np.array(colorsys.hsv_to_rgb((h + 0.25) % 1.0, s, v)) * 255
        np.testing.assert_allclose(got, expected, atol=6)  # OpenCV's 8-bit hue steps are 2 degrees
    np.testing.assert_array_equal(T.shift_hue(rgb[..., ::-1].copy(), 90, "BGR"), shifted[..., ::-1])
    assert (shifted[0, 3] == 128).all()  # grays have no hue


def test_colour_test_names():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(T.colour_test_transform("hue90")(image, "BGR"), T.shift_hue(image, 90, "BGR"))
    gray = T.colour_test_transform("grayscale")(image, "BGR")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    with pytest.raises(ValueError, match="TEST.CLS_COLOUR_TESTS.*sepia"):
        T.colour_test_transform("sepia")
