"""Image and box transforms (OpenCV, numpy): HWC images in, random parameters from a numpy Generator."""
from typing import Callable, List, Sequence, Tuple

import cv2
import numpy as np

# AlexNet PCA lighting: eigen-decomposition of ImageNet's RGB pixel covariance (pixels on the 0-1 scale).
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array([
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
])  # columns are eigenvectors, rows R, G, B


def convert_format(image: np.ndarray, source: str, target: str) -> np.ndarray:
    """Reorder channels between "RGB" and "BGR"."""
    for fmt in (source, target):
        if fmt not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT: unsupported channel order {fmt!r} (use 'RGB' or 'BGR')")
    return image if source == target else np.ascontiguousarray(image[..., ::-1])


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is `size`, keeping the aspect ratio (longer side rounded)."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_h, new_w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    if (new_h, new_w) == (height, width):
        return image
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def resize_exact(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size, ignoring the aspect ratio."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """The size x size window whose top-left pixel is (top, left)."""
    if top < 0 or left < 0 or top + size > image.shape[0] or left + size > image.shape[1]:
        raise ValueError(f"crop {size}x{size} at ({top}, {left}) exceeds the image of shape {image.shape[:2]}")
    return image[top:top + size, left:left + size]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size window at a uniformly random position."""
    top = int(rng.integers(0, image.shape[0] - size + 1))
    left = int(rng.integers(0, image.shape[1] - size + 1))
    return crop(image, top, left, size)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred size x size window (offsets rounded down)."""
    return crop(image, (image.shape[0] - size) // 2, (image.shape[1] - size) // 2, size)


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
    """(10,S,S,C): top-left, top-right, bottom-left, bottom-right, centre, then the same five flipped."""
    height, width = image.shape[:2]
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size)]
    crops = [crop(image, top, left, size) for top, left in corners] + [center_crop(image, size)]
    crops = np.stack(crops)  # (5,S,S,C)
    return np.concatenate([crops, crops[:, :, ::-1]])


def hflip(image: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return image[:, ::-1]


def random_hflip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror with probability 1/2."""
    return hflip(image) if rng.random() < 0.5 else image


def shift_hue(image: np.ndarray, degrees: float, image_format: str) -> np.ndarray:
    """Rotate the hue of an (H,W,3) uint8 image by `degrees` (colour wheel, 360 a full turn); grays stay gray."""
    to_hsv, from_hsv = ((cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR) if image_format == "BGR"
                        else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB))
    hsv = cv2.cvtColor(image, to_hsv)
    # OpenCV's 8-bit hue is degrees / 2, in 0..179
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(degrees / 2))) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, from_hsv)


def to_grayscale(image: np.ndarray, image_format: str) -> np.ndarray:
    """The image's luma (ITU-R BT.601, OpenCV's) in all three channels: colour removed, brightness kept."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image_format == "BGR" else cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


class HueShift:
    """shift_hue by a fixed number of degrees, as a picklable callable (image, image_format) -> image: loader
    workers started by spawn receive their mapper by pickling, which refuses lambdas."""

    def __init__(self, degrees: float):
        self.degrees = degrees

    def __call__(self, image: np.ndarray, image_format: str) -> np.ndarray:
        return shift_hue(image, self.degrees, image_format)


def colour_test_transform(name: str) -> Callable[[np.ndarray, str], np.ndarray]:
    """The image change a TEST.CLS_COLOUR_TESTS entry names: "grayscale", or "hue<degrees>" (e.g. "hue90")."""
    if name == "grayscale":
        return to_grayscale
    if name.startswith("hue"):
        try:
            degrees = float(name[3:])
        except ValueError:
            degrees = None
        if degrees is not None:
            return HueShift(degrees)
    raise ValueError(f"TEST.CLS_COLOUR_TESTS: unknown test {name!r}; use 'grayscale' or 'hue<degrees>' such as 'hue90'")


def pad_zeros(image: np.ndarray, pad: int) -> np.ndarray:
    """Zero (black) border of `pad` pixels on every side."""
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)


def lighting_delta(alpha: np.ndarray, image_format: str) -> np.ndarray:
    """Per-pixel offset (3,) on the 0-255 scale in `image_format` order: eigvec @ (alpha * eigval) * 255."""
    rgb = IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL) * 255.0
    return rgb if image_format == "RGB" else rgb[::-1]


def pca_lighting(image: np.ndarray, std: float, rng: np.random.Generator, image_format: str) -> np.ndarray:
    """AlexNet lighting noise: alpha ~ N(0, std) per eigenvector; returns float32 (no clipping)."""
    alpha = rng.normal(0.0, std, size=3)
    return image.astype(np.float32) + lighting_delta(alpha, image_format).astype(np.float32)


def imagenet_train_augment(image: np.ndarray, scale_range: Sequence[int], crop_size: int, lighting_std: float,
                           rng: np.random.Generator, image_format: str) -> np.ndarray:
    """The paper's section 3.4: shorter side ~ U[scale_range], random crop, flip, PCA lighting."""
    shorter = int(rng.integers(scale_range[0], scale_range[1] + 1))
    image = random_hflip(random_crop(resize_shorter_side(image, shorter), crop_size, rng), rng)
    if lighting_std > 0:
        return pca_lighting(image, lighting_std, rng, image_format)
    return image.astype(np.float32)


def cifar_train_augment(image: np.ndarray, pad: int, crop_size: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's section 4.2: pad with zeros, random crop, flip."""
    return random_hflip(random_crop(pad_zeros(image, pad), crop_size, rng), rng)


def multi_scale(image: np.ndarray, scales: Sequence[int]) -> List[np.ndarray]:
    """The whole image with its shorter side at each scale (fully-convolutional testing)."""
    return [resize_shorter_side(image, int(s)) for s in scales]


# ---------------------------------------------------------------- detection


def choose_min_size(min_sizes: Sequence[int], sampling: str, rng: np.random.Generator) -> int:
    """The training shorter side: one of `min_sizes` ("choice") or uniform in [min, max] ("range")."""
    if sampling == "choice":
        return int(min_sizes[int(rng.integers(len(min_sizes)))])
    if sampling == "range":
        if len(min_sizes) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN must be (low, high) for 'range' sampling, got {min_sizes}")
        return int(rng.integers(min_sizes[0], min_sizes[1] + 1))
    raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING: unknown value {sampling!r} (use 'choice' or 'range')")


def shortest_edge_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w): shorter side to min_size unless the longer side would exceed max_size."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(round(height * scale)), int(round(width * scale))


def resize_with_boxes(image: np.ndarray, boxes: np.ndarray, new_h: int, new_w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resize an image to (new_h, new_w) and scale its boxes (K,4) x1y1x2y2 with it."""
    height, width = image.shape[:2]
    scale = np.array([new_w / width, new_h / height] * 2, dtype=np.float32)
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, boxes * scale


def hflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Mirror boxes (K,4) x1y1x2y2 in an image of `width`: x1' = W - x2, x2' = W - x1."""
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped
