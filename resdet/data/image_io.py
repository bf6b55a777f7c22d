"""Reading image files with OpenCV; a missing, empty, truncated or undecodable file is named in the error."""
from typing import Optional, Tuple

import cv2
import numpy as np

from .errors import UnreadableImageError
from .transforms import convert_format

_JPEG_START = (0xFF, 0xD8)
_JPEG_END = 0xD9
_START_OF_SCAN = 0xDA
_RESTART_MARKERS = range(0xD0, 0xD8)  # like SOI and TEM (0x01), these markers carry no length field


# Appended to read errors: how to find every bad image at once, and how to train past them.
_HINT = "tools/check_dataset.py lists every unreadable image; DATALOADER.SKIP_CORRUPT True skips them in training"


def read_image(file_name: str, image_format: str) -> np.ndarray:
    """Decode an image file to (H,W,3) uint8 in `image_format` channel order; UnreadableImageError names a bad one."""
    image, problem = try_read_image(file_name)
    if image is None:
        raise UnreadableImageError(f"could not read image {file_name}: {problem} ({_HINT})")
    return convert_format(image, "BGR", image_format)


def try_read_image(file_name: str) -> Tuple[Optional[np.ndarray], str]:
    """(the (H,W,3) uint8 BGR image, "") or (None, why the file cannot be read)."""
    try:
        data = np.fromfile(file_name, dtype=np.uint8)
    except FileNotFoundError:
        return None, "the file does not exist"
    except OSError as err:
        return None, str(err.strerror or err)
    except ValueError as err:  # a path no file can have (a NUL byte from an annotation file)
        return None, str(err)
    if data.size == 0:
        return None, "the file is empty"
    if tuple(data[:2]) == _JPEG_START and not jpeg_is_complete(data):
        # libjpeg pads a truncated JPEG with grey rows instead of failing: catch it before it reaches training
        return None, "truncated JPEG (no end-of-image marker)"
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        return None, "not an image OpenCV can decode (corrupt, truncated or an unsupported format)"
    return image, ""


def jpeg_is_complete(data: np.ndarray) -> bool:
    """Whether the JPEG stream in `data` (uint8) reaches its end-of-image marker (trailing bytes may follow it)."""
    size = data.size
    if size < 4:
        return False
    # Inside entropy-coded data 0xFF is followed by 0x00 (stuffing), 0xFF (fill) or a restart marker;
    # any other following byte starts a real marker, which ends the scan.
    ff_positions = np.flatnonzero(data[:-1] == 0xFF)
    following = data[ff_positions + 1]
    starts_marker = (following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))
    marker_positions = ff_positions[starts_marker]
    position = 2
    while position + 1 < size:
        marker = int(data[position + 1])
        if data[position] != 0xFF or marker == 0xFF:
            # stray or fill bytes between segments (libjpeg skips them too): go to the next marker
            position = _next_marker(marker_positions, position + 1)
        elif marker == _JPEG_END:
            return True
        elif marker in _RESTART_MARKERS or marker in (0x01, 0xD8):
            position += 2
        elif position + 3 >= size:
            return False
        else:
            segment_end = position + 2 + (int(data[position + 2]) << 8 | int(data[position + 3]))
            position = _next_marker(marker_positions, segment_end) if marker == _START_OF_SCAN else segment_end
    return False


def _next_marker(marker_positions: np.ndarray, start: int) -> int:
    """The first marker position at or after `start`, or past the end of any file when there is none."""
    index = int(np.searchsorted(marker_positions, start))
    return int(marker_positions[index]) if index < marker_positions.size else np.iinfo(np.int64).max
