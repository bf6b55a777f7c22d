"""Draw detections on an image with OpenCV: boxes, class names and scores."""
from typing import Optional, Sequence

import cv2
import numpy as np


def class_colour(label: int) -> tuple:
    """A stable, well-separated BGR colour per class (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(image_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: Optional[Sequence[str]] = None, score_thresh: float = 0.5) -> np.ndarray:
    """A copy of `image_bgr` (H,W,3 uint8) with each detection above `score_thresh` drawn; boxes (N,4) x1y1x2y2."""
    keep = scores >= score_thresh
    texts = [f"{_name(label, class_names)} {score:.2f}" for score, label in zip(scores[keep], labels[keep])]
    return draw_boxes(image_bgr, boxes[keep], labels[keep], texts)


def draw_ground_truth(image_bgr: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      class_names: Optional[Sequence[str]] = None, notes: Optional[Sequence[str]] = None) -> np.ndarray:
    """A copy of `image_bgr` with each annotated box (N,4) x1y1x2y2 drawn in its class colour and named; `notes`
    (one string per box, e.g. "crowd") follow the name."""
    notes = notes if notes is not None else [""] * len(labels)
    texts = [f"{_name(label, class_names)} {note}".strip() for label, note in zip(labels, notes)]
    return draw_boxes(image_bgr, boxes, labels, texts)


def draw_boxes(image_bgr: np.ndarray, boxes: np.ndarray, labels: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """A copy of `image_bgr` with box i outlined in class_colour(labels[i]) and texts[i] on a filled tag above it."""
    canvas = image_bgr.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    font_scale = max(0.35, min(canvas.shape[:2]) / 900)
    for box, label, text in zip(boxes, labels, texts):
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = max(y1 - height - baseline, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + width, top + height + baseline), colour, -1)
        cv2.putText(canvas, text, (x1, top + height), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _name(label, class_names: Optional[Sequence[str]]) -> str:
    label = int(label)
    return class_names[label] if class_names is not None and label < len(class_names) else str(label)
