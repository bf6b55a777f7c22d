"""What tools/benchmark.py --task eval --coco-images times: COCO box evaluation of a synthetic COCO-like set (no model,
no images), with each COCO API backend on the same detections."""
import copy
import logging
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from resdet.evaluation.coco import METRIC_NAMES
from resdet.evaluation.coco_backends import (
    COCO_EVAL_BACKENDS,
    FASTER_COCO_EVAL_REQUIREMENT,
    CocoBackend,
    coco_eval_backend,
    installed_coco_eval_backends,
)

logger = logging.getLogger("resdet.benchmark")
NUM_CATEGORIES = 80
OBJECTS_PER_IMAGE = 7.3  # COCO val2017's mean; the count per image is Poisson
CROWD_FRACTION = 0.01  # about COCO's share of iscrowd annotations
IMAGE_SIDES = (480, 640)  # (height, width), COCO's most common size


def synthetic_ground_truth(num_images: int, seed: int = 0) -> dict:
    """A COCO dataset dict: NUM_CATEGORIES categories, Poisson(OBJECTS_PER_IMAGE) boxes per image with log-uniform
    areas from tiny to most of the image (small, medium and large), CROWD_FRACTION of them crowd regions."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIDES
    counts = rng.poisson(OBJECTS_PER_IMAGE, num_images)
    total = int(counts.sum())
    image_ids = np.repeat(np.arange(1, num_images + 1), counts)
    sides = np.exp(rng.uniform(np.log(8), np.log(400), (total, 2)))  # (total, 2) w, h
    corners = rng.uniform(0, 1, (total, 2)) * (np.array([width, height]) - sides).clip(min=0)
    categories = rng.integers(1, NUM_CATEGORIES + 1, total)
    crowd = rng.uniform(size=total) < CROWD_FRACTION
    annotations = [
        {"id": index + 1, "image_id": int(image_id), "category_id": int(category), "iscrowd": int(is_crowd),
         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h)}
        for index, (image_id, category, is_crowd, (x, y), (w, h))
        in enumerate(zip(image_ids, categories, crowd, corners, sides))
    ]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": height, "width": width}
              for i in range(1, num_images + 1)]
    names = [{"id": i, "name": f"class{i}"} for i in range(1, NUM_CATEGORIES + 1)]
    return {"images": images, "annotations": annotations, "categories": names}


def synthetic_detections(ground_truth: dict, per_image: int, seed: int = 1) -> List[dict]:
    """COCO-format results, `per_image` on every image: a jittered copy of each object (a tenth of them with another
    category), then random boxes of random categories with lower scores, as a detector's top-`per_image` list."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIDES
    objects: Dict[int, List[dict]] = {image["id"]: [] for image in ground_truth["images"]}
    for annotation in ground_truth["annotations"]:
        objects[annotation["image_id"]].append(annotation)
    detections = []
    for image_id, image_objects in objects.items():
        hits = image_objects[:per_image]
        boxes = np.array([a["bbox"] for a in hits], dtype=np.float64).reshape(-1, 4)
        boxes += rng.normal(0, 0.08, boxes.shape) * boxes[:, [2, 3, 2, 3]]
        categories = [a["category_id"] if rng.uniform() > 0.1 else int(rng.integers(1, NUM_CATEGORIES + 1))
                      for a in hits]
        extra = per_image - len(hits)
        sides = np.exp(rng.uniform(np.log(8), np.log(400), (extra, 2)))
        corners = rng.uniform(0, 1, (extra, 2)) * (np.array([width, height]) - sides).clip(min=0)
        boxes = np.concatenate([boxes, np.concatenate([corners, sides], axis=1)])
        categories += rng.integers(1, NUM_CATEGORIES + 1, extra).tolist()
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(hits)), rng.uniform(0.0, 0.6, extra)])
        boxes[:, 2:] = boxes[:, 2:].clip(min=1.0)
        detections += [{"image_id": image_id, "category_id": int(category), "bbox": box, "score": float(score)}
                       for category, box, score in zip(categories, boxes.tolist(), scores)]
    return detections


def evaluation_step(backend: CocoBackend, ground_truth: dict, metrics: Dict[str, float]) -> Callable[[list], int]:
    """A benchmark step: one COCO box evaluation of the detections it is given (a fresh copy each time, since loadRes
    writes into them) on every image; it leaves the AP numbers (%) in `metrics` and returns the image count."""
    coco_gt = backend.load_ground_truth(copy.deepcopy(ground_truth))  # each backend marks up its own annotations
    image_ids = sorted(image["id"] for image in ground_truth["images"])

    def step(detections: List[dict]) -> int:
        coco_eval, _ = backend.evaluate_boxes(coco_gt, detections, image_ids)
        metrics.update({name: float(stat * 100) for name, stat in zip(METRIC_NAMES, coco_eval.stats)})
        return len(image_ids)
    return step


def fresh_copy(detections: List[dict]) -> List[dict]:
    """Detections as they were generated: a copy of each dict (the bbox lists are only read)."""
    return [dict(detection) for detection in detections]


def synthetic_set(num_images: int, per_image: int) -> Tuple[dict, List[dict]]:
    """The ground truth and detections --coco-images times."""
    ground_truth = synthetic_ground_truth(num_images)
    return ground_truth, synthetic_detections(ground_truth, per_image)


def coco_evaluation(configured: str, num_images: int, per_image: int, warmup: int, iters: int,
                    timer: Callable[[Callable[[list], int]], Any]) -> dict:
    """Every installed backend's time for one box evaluation of the synthetic set, in turn on the same detections
    (`timer(step)` makes the benchmark's Measured), and the AP numbers (%) each gave; `configured` is
    TEST.COCO_EVAL_BACKEND, reported as "coco_eval_backend"."""
    configured = coco_eval_backend(configured).name
    names = installed_coco_eval_backends()
    if "faster_coco_eval" not in names:  # pycocotools is one of resdet's requirements
        logger.warning("faster-coco-eval is not installed, so only pycocotools is timed; pip install '%s'",
                       FASTER_COCO_EVAL_REQUIREMENT)
    ground_truth, detections = synthetic_set(num_images, per_image)
    metrics: Dict[str, Dict[str, float]] = {name: {} for name in names}
    steps = [timer(evaluation_step(coco_eval_backend(name), ground_truth, metrics[name])) for name in names]
    for index in range(warmup + iters):
        for measured in steps:
            measured.run(fresh_copy(detections), timed=index >= warmup)  # loadRes writes into its detections
    result = {name: measured.summary() for name, measured in zip(names, steps)}
    if len(names) == len(COCO_EVAL_BACKENDS):
        result["coco_eval_speedup"] = result["pycocotools"]["time_s"] / result["faster_coco_eval"]["time_s"]
    return dict(result, device="cpu", dataset="synthetic", images=num_images, detections_per_image=per_image,
                batch_size=None, input_size=None, coco_eval_backend=configured, bbox=metrics)
