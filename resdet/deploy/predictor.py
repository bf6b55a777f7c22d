"""Predictor: a trained model on BGR uint8 images or image files, with the class names its checkpoint carries."""
import contextlib
import logging
import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_weights
from ..checkpoint.meta import class_names as resolve_class_names
from ..checkpoint.meta import warn_on_input_mismatch
from ..config import CfgNode, ConfigError, setup_cfg
from ..data.mappers import ClassificationTestMapper, to_chw_tensor
from ..data.transforms import convert_format
from ..evaluation.classification import predict_scores
from ..modeling import build_model
from ..modeling.detector.tta import with_test_time_augmentation

logger = logging.getLogger(__name__)

Image = Union[np.ndarray, str]
TOP_K = 5


def inference_config(config: Union[str, CfgNode], overrides: Sequence = ()) -> CfgNode:
    """A frozen copy of the config (a file or a CfgNode) with the KEY VALUE overrides merged."""
    overrides = list(overrides)
    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        cfg.merge_from_list(overrides)
        cfg.freeze()
        return cfg
    if not os.path.isfile(config):
        raise ConfigError(f"config file not found: {config}")
    return setup_cfg(config, overrides)


def build_inference_model(cfg) -> Tuple[nn.Module, Dict[str, Any]]:
    """The config's model in eval mode with MODEL.WEIGHTS loaded, and that file's `meta` ({} without one)."""
    weights = cfg.MODEL.WEIGHTS
    untrained = cfg.clone()
    untrained.defrost()
    untrained.MODEL.WEIGHTS = ""  # loaded below, so that its meta is read with it
    model = build_model(untrained).eval()
    if not weights:
        logger.warning("MODEL.WEIGHTS is empty: the model is randomly initialised")
        return model, {}
    meta = load_weights(model, weights).meta
    warn_on_input_mismatch(cfg, meta, weights)
    return model, meta


def read_bgr(image: Image) -> np.ndarray:
    """An (H, W, 3) uint8 BGR array as given, or decoded from a file path."""
    if isinstance(image, str):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {image}")
        decoded = cv2.imread(image, cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f"cannot decode image {image}")
        return decoded
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"Predictor: expected a BGR uint8 (H, W, 3) array or a path, got a {described}")
    return image


class Predictor:
    """`predictor(image)` -> dict, `predictor([images])` -> list of dicts, for BGR uint8 (H, W, 3) arrays or paths.

    A detector's dict: "boxes" (N, 4) x1y1x2y2 in the image's pixels, "scores" (N,), "labels" (N,) in 0..C-1 and
    "class_names" (one per detection); a classifier's: "scores" (C,) probabilities, "top5" (5,) class indices best
    first and their "class_names". Arrays are numpy. `class_names` lists all C names.
    """

    def __init__(self, config: Union[str, CfgNode], weights: str = None, device: str = None, amp: bool = False):
        overrides = [item for key, value in (("MODEL.WEIGHTS", weights), ("MODEL.DEVICE", device))
                     if value is not None for item in (key, value)]
        self.cfg = inference_config(config, overrides)
        model, meta = build_inference_model(self.cfg)
        self.model = with_test_time_augmentation(self.cfg, model)  # TEST.AUG.ENABLED: a detector at several sizes
        self.class_names = resolve_class_names(self.cfg, meta)
        self.device = next(self.model.parameters()).device
        self.amp = amp
        self.is_detector = self.cfg.MODEL.META_ARCHITECTURE != "Classifier"
        self.mapper = None if self.is_detector else ClassificationTestMapper(self.cfg)

    def __call__(self, images: Union[Image, List[Image]]) -> Union[dict, List[dict]]:
        if isinstance(images, (list, tuple)):
            return self.predict([read_bgr(image) for image in images])
        return self.predict([read_bgr(images)])[0]

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.float16 if self.device.type == "cuda" else torch.bfloat16)

    @torch.inference_mode()
    def predict(self, images_bgr: List[np.ndarray]) -> List[dict]:
        """One dict per BGR uint8 image (a detector runs them as one batch)."""
        with self._autocast():
            if self.is_detector:
                return [self._detections(output) for output in self.model(self._detector_inputs(images_bgr))]
            return [self._classification(self._class_scores(image)) for image in images_bgr]

    def _detector_inputs(self, images_bgr: List[np.ndarray]) -> List[dict]:
        inputs = []
        for image in images_bgr:
            pixels = to_chw_tensor(convert_format(image, "BGR", self.cfg.INPUT.FORMAT)).to(self.device)
            inputs.append({"image": pixels, "height": image.shape[0], "width": image.shape[1]})
        return inputs

    def _detections(self, output: Dict[str, torch.Tensor]) -> dict:
        result = {key: value.float().cpu().numpy() if key != "labels" else value.cpu().numpy()
                  for key, value in output.items()}
        result["class_names"] = [self.class_names[label] for label in result["labels"]]
        return result

    def _class_scores(self, image_bgr: np.ndarray) -> torch.Tensor:
        """(C,) probabilities under TEST.CLS_MODE, with the test loader's transform."""
        mode = self.cfg.TEST.CLS_MODE
        image, _ = self.mapper({"image": convert_format(image_bgr, "BGR", "RGB"), "label": -1})
        batch = [scaled[None] for scaled in image] if mode == "fully_conv" else image[None]
        scores = predict_scores(self.model, batch, mode, self.device).float()
        # "center" gives logits; the multi-crop modes already average probabilities
        return (F.softmax(scores, dim=1) if mode == "center" else scores)[0]

    def _classification(self, probabilities: torch.Tensor) -> dict:
        top = probabilities.topk(min(TOP_K, len(probabilities))).indices.cpu().numpy()
        return {"scores": probabilities.cpu().numpy(), "top5": top,
                "class_names": [self.class_names[index] for index in top]}
