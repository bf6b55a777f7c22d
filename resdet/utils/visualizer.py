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
    canvas = image_bgr.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    font_scale = max(0.35, min(canvas.shape[:2]) / 900)
    keep = scores >= score_thresh
    for box, score, label in zip(boxes[keep], scores[keep], labels[keep]):
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        name = class_names[int(label)] if class_names is not None and int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = max(y1 - height - baseline, 0)
        cv2.rectangle(canvas, (x1, top), (x1 + width, top + height + baseline), colour, -1)
        cv2.putText(canvas, text, (x1, top + height), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
