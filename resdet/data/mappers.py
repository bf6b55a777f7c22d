"""Mappers: one dataset dict (+ a numpy Generator) -> the model's input for that image."""
import numpy as np
import torch

from . import transforms as T
from .image_io import read_image

CLS_AUGMENTATIONS = ("imagenet", "cifar", "none")
CLS_TEST_MODES = ("center", "ten_crop", "fully_conv")


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """(...,H,W,C) array -> (...,C,H,W) float32 tensor, values unchanged (0-255)."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, -3))).float()


def load_classification_image(record: dict, image_format: str) -> np.ndarray:
    """(H,W,3) uint8 in `image_format`: the in-memory "image" (RGB, e.g. CIFAR) or the decoded "file_name"."""
    if "image" in record:
        return T.convert_format(record["image"], "RGB", image_format)
    return read_image(record["file_name"], image_format)


def _check_choice(key: str, value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{key}: unknown value {value!r}; expected one of {list(allowed)}")
    return value


class ClassificationTrainMapper:
    """INPUT.CLS_AUGMENTATION "imagenet" (scale, crop, flip, lighting), "cifar" (pad, crop, flip) or "none"."""

    def __init__(self, cfg):
        self.augmentation = _check_choice("INPUT.CLS_AUGMENTATION", cfg.INPUT.CLS_AUGMENTATION, CLS_AUGMENTATIONS)
        self.image_format = cfg.INPUT.FORMAT
        self.crop_size = cfg.INPUT.CROP.SIZE
        self.scale_range = tuple(cfg.INPUT.SCALE_RANGE)
        self.lighting_std = cfg.INPUT.LIGHTING_STD
        self.pad = cfg.INPUT.CIFAR_PAD
        self.hue_jitter = cfg.INPUT.HUE_JITTER
        if not 0 <= self.hue_jitter <= 180:
            raise ValueError(f"INPUT.HUE_JITTER: degrees in [0, 180], got {self.hue_jitter}")

    def __call__(self, record: dict, rng: np.random.Generator):
        """-> (image (3,S,S) float32 0-255, label int)."""
        image = load_classification_image(record, self.image_format)
        if self.hue_jitter > 0:
            image = T.shift_hue(image, rng.uniform(-self.hue_jitter, self.hue_jitter), self.image_format)
        if self.augmentation == "imagenet":
            image = T.imagenet_train_augment(image, self.scale_range, self.crop_size, self.lighting_std, rng,
                                             self.image_format)
        elif self.augmentation == "cifar":
            image = T.cifar_train_augment(image, self.pad, self.crop_size, rng)
        else:
            image = T.resize_exact(image, self.crop_size)
        return to_chw_tensor(image), record["label"]


class ClassificationTestMapper:
    """TEST.CLS_MODE "center" (3,S,S), "ten_crop" (10,3,S,S) or "fully_conv" [(3,h,w) per TEST.SCALES].

    "center" follows the training augmentation: "imagenet" resizes the shorter side to INPUT.TEST_RESIZE
    and takes the centre crop; "cifar" keeps the original image (the paper tests on it); "none" resizes
    to CROP.SIZE x CROP.SIZE as in training.
    """

    def __init__(self, cfg, colour_test: str = ""):
        self.mode = _check_choice("TEST.CLS_MODE", cfg.TEST.CLS_MODE, CLS_TEST_MODES)
        # one of TEST.CLS_COLOUR_TESTS applied to every image before the test mode's crops ("": none)
        self.colour_change = T.colour_test_transform(colour_test) if colour_test else None
        self.augmentation = _check_choice("INPUT.CLS_AUGMENTATION", cfg.INPUT.CLS_AUGMENTATION, CLS_AUGMENTATIONS)
        self.image_format = cfg.INPUT.FORMAT
        self.crop_size = cfg.INPUT.CROP.SIZE
        self.resize = cfg.INPUT.TEST_RESIZE
        self.scales = tuple(cfg.TEST.SCALES)

    def __call__(self, record: dict, rng: np.random.Generator = None):
        """-> (images as described above, label int); deterministic."""
        image = load_classification_image(record, self.image_format)
        if self.colour_change is not None:
            image = self.colour_change(image, self.image_format)
        if self.mode == "fully_conv":
            return [to_chw_tensor(im) for im in T.multi_scale(image, self.scales)], record["label"]
        if self.mode == "ten_crop":
            return to_chw_tensor(T.ten_crop(T.resize_shorter_side(image, self.resize), self.crop_size)), record["label"]
        if self.augmentation == "imagenet":
            image = T.center_crop(T.resize_shorter_side(image, self.resize), self.crop_size)
        elif self.augmentation == "none":
            image = T.resize_exact(image, self.crop_size)
        return to_chw_tensor(image), record["label"]


def training_targets(record: dict) -> tuple:
    """Boxes (K,4) float32 and labels (K,) int64 of the annotations used for training (no crowd, no difficult)."""
    kept = [a for a in record["annotations"] if not a.get("iscrowd", 0) and not a.get("difficult", False)]
    boxes = np.array([a["bbox"] for a in kept], dtype=np.float32).reshape(-1, 4)
    labels = np.array([a["category_id"] for a in kept], dtype=np.int64)
    return boxes, labels


class DetectionTrainMapper:
    """Read, resize the shorter side (INPUT.MIN_SIZE_TRAIN, capped by MAX_SIZE_TRAIN), flip; boxes follow.

    Output: {"image": (3,H,W) float32 0-255 in INPUT.FORMAT, "height", "width": the RESIZED image's size
    (so the model does not resize training images again), "boxes": (K,4) x1y1x2y2 in the resized image's
    pixels, "labels": (K,) int64 contiguous, "image_id", "file_name"}. Crowd and difficult boxes are left out.
    """

    def __init__(self, cfg):
        self.image_format = cfg.INPUT.FORMAT
        self.min_sizes = tuple(cfg.INPUT.MIN_SIZE_TRAIN)
        self.sampling = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        self.max_size = cfg.INPUT.MAX_SIZE_TRAIN
        self.flip = _check_choice("INPUT.RANDOM_FLIP", cfg.INPUT.RANDOM_FLIP, ("horizontal", "none")) == "horizontal"
        T.choose_min_size(self.min_sizes, self.sampling, np.random.default_rng(0))  # validates the config early

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        image = read_image(record["file_name"], self.image_format)
        boxes, labels = training_targets(record)
        min_size = T.choose_min_size(self.min_sizes, self.sampling, rng)
        new_h, new_w = T.shortest_edge_size(*image.shape[:2], min_size, self.max_size)
        image, boxes = T.resize_with_boxes(image, boxes, new_h, new_w)
        if self.flip and rng.random() < 0.5:
            image, boxes = T.hflip(image), T.hflip_boxes(boxes, new_w)
        return {
            "image": to_chw_tensor(image),
            "height": new_h,
            "width": new_w,
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }


class DetectionTestMapper:
    """The original image (the model resizes it) with its size, "image_id" and "file_name"."""

    def __init__(self, cfg):
        self.image_format = cfg.INPUT.FORMAT

    def __call__(self, record: dict, rng: np.random.Generator = None) -> dict:
        image = read_image(record["file_name"], self.image_format)
        return {
            "image": to_chw_tensor(image),
            "height": image.shape[0],
            "width": image.shape[1],
            "image_id": record["image_id"],
            "file_name": record["file_name"],
        }
