"""read_image names the file it cannot read: missing, empty, truncated (which OpenCV would pad), not an image."""
import cv2
import numpy as np
import pytest

from resdet.data.errors import DataError, UnreadableImageError
from resdet.data.image_io import jpeg_is_complete, read_image


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _encode(image, ext, *params):
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def test_reads_good_images_in_either_channel_order(tmp_path, image):
    path = tmp_path / "a.png"
    path.write_bytes(_encode(image, ".png"))
    assert np.array_equal(read_image(str(path), "BGR"), image)
    assert np.array_equal(read_image(str(path), "RGB"), image[..., ::-1])


@pytest.mark.parametrize("params", [(), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 2)])
def test_jpeg_complete_unless_cut(image, params):
    data = _encode(image, ".jpg", *params)
    assert jpeg_is_complete(np.frombuffer(data, np.uint8))
    assert jpeg_is_complete(np.frombuffer(data + b"appended video or padding" * 10, np.uint8))
    for cut in (len(data) - 1, len(data) - 2, len(data) // 2, 300, 3):
        assert not jpeg_is_complete(np.frombuffer(data[:cut], np.uint8))


@pytest.mark.parametrize("make, why", [
    (lambda image: None, "the file does not exist"),
    (lambda image: b"", "the file is empty"),
    (lambda image: _encode(image, ".jpg")[:-600], "truncated JPEG"),  # OpenCV alone would pad it with grey rows
    (lambda image: _encode(image, ".png")[:-40], "not an image OpenCV can decode"),
    (lambda image: b"GIF89a not really", "not an image OpenCV can decode"),
])
def test_unreadable_image_named(tmp_path, image, make, why):
    path = tmp_path / "000050.jpg"
    data = make(image)
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(UnreadableImageError, match=f"could not read image {path}: {why}.*SKIP_CORRUPT") as info:
        read_image(str(path), "RGB")
    assert isinstance(info.value, DataError) and isinstance(info.value, OSError)


def test_impossible_path_named(tmp_path):
    with pytest.raises(UnreadableImageError, match="could not read image .*a\x00b.jpg: .*null"):
        read_image(str(tmp_path / "a\x00b.jpg"), "BGR")
