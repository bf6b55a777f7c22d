"""Detection test-time augmentation (TEST.AUG.*): a FasterRCNN run at several sizes and mirrored, detections mapped
back to each image and merged per class.

Every augmentation is one `FasterRCNN.inference` pass: the image resized so that its shorter side is a size of
TEST.AUG.MIN_SIZES (the longer side at most TEST.AUG.MAX_SIZE), and with TEST.AUG.FLIP the same again mirrored.
The pass maps its boxes back to the image's "height" x "width"; a mirrored pass's boxes are mirrored back with
x -> width - x, exact because resizing commutes with mirroring. The detections of all passes are then merged per
class (TEST.AUG.MERGE):

- "nms": class-wise NMS at MODEL.ROI_HEADS.NMS_THRESH_TEST over all passes, the best DETECTIONS_PER_IMAGE kept;
- "vote": the same NMS picks the boxes, then each kept box becomes the score-weighted mean of the boxes of its
  class overlapping it by at least that threshold (box voting), so that the passes agree on where an object is,
  not only whether; the score stays the kept box's.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.ops import box_iou

from .boxes import batched_nms

MERGE_METHODS = ("nms", "vote")


def hflip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """(N, 4) x1y1x2y2 boxes of an image `width` pixels wide, mirrored left-right: x -> width - x."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def hflip_inputs(batch: List[dict]) -> List[dict]:
    """The batch's images mirrored left-right ((C, H, W) tensors flipped along W); other keys kept."""
    return [{**item, "image": item["image"].flip(-1)} for item in batch]


def merge_detections(detections: Sequence[Dict[str, torch.Tensor]], nms_thresh: float, max_detections: int,
                     method: str) -> Dict[str, torch.Tensor]:
    """One image's detections of several passes ({"boxes" (N, 4), "scores" (N,), "labels" (N,)} each) merged per
    class by NMS or box voting (module docstring); the best `max_detections`, by decreasing score."""
    boxes = torch.cat([d["boxes"] for d in detections])
    scores = torch.cat([d["scores"] for d in detections])
    labels = torch.cat([d["labels"] for d in detections])
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
    kept_boxes = boxes[keep]
    if method == "vote" and len(keep):
        same_class = labels[keep][:, None] == labels[None, :]  # (K, N)
        weights = (box_iou(kept_boxes, boxes) >= nms_thresh) & same_class
        weights = weights.to(scores.dtype) * scores[None, :]  # each kept box is its own voter: weight > 0
        kept_boxes = (weights @ boxes) / weights.sum(dim=1, keepdim=True)
    return {"boxes": kept_boxes, "scores": scores[keep], "labels": labels[keep]}


class DetectorWithTTA(nn.Module):
    """Eval-only wrapper: `wrapper(batch)` gives FasterRCNN's outputs (one dict per image) under TEST.AUG.*.

    With `model.return_proposals` set, the outputs carry the proposals of the first pass (the first size, not
    mirrored): proposal recall measures the RPN at one scale.
    """

    def __init__(self, model: nn.Module, min_sizes: Sequence[int], max_size: int, flip: bool, merge: str,
                 nms_thresh: float, detections_per_image: int):
        super().__init__()
        if merge not in MERGE_METHODS:
            raise ValueError(f"DetectorWithTTA: merge {merge!r}; expected one of {MERGE_METHODS}")
        self.model = model
        self.min_sizes = [int(size) for size in min_sizes]
        self.max_size = int(max_size)
        self.flip = flip
        self.merge = merge
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        # the wrapped model's mode, so that inference_on_dataset, which restores the mode it found, leaves a model
        # evaluated during training in training mode
        self.training = model.training

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> "DetectorWithTTA":
        """The wrapper TEST.AUG.{MIN_SIZES,MAX_SIZE,FLIP,MERGE} and MODEL.ROI_HEADS' test thresholds describe."""
        aug, heads = cfg.TEST.AUG, cfg.MODEL.ROI_HEADS
        return cls(model, aug.MIN_SIZES, aug.MAX_SIZE, aug.FLIP, aug.MERGE, heads.NMS_THRESH_TEST,
                   heads.DETECTIONS_PER_IMAGE)

    def augmentations(self) -> List[Tuple[int, bool]]:
        """(shorter side, mirrored) of every pass, in the order they run."""
        return [(size, flipped) for size in self.min_sizes for flipped in ((False, True) if self.flip else (False,))]

    def augmented_detections(self, batch: List[dict]) -> List[List[Dict[str, torch.Tensor]]]:
        """Per pass, per image: the model's detections mapped back to the image's "height" x "width"."""
        passes = []
        for size, flipped in self.augmentations():
            outputs = self.model.inference(hflip_inputs(batch) if flipped else batch, size, self.max_size)
            if flipped:
                outputs = [{**output, "boxes": hflip_boxes(output["boxes"], item.get("width", item["image"].shape[-1]))}
                           for output, item in zip(outputs, batch)]
            passes.append(outputs)
        return passes

    def forward(self, batch: List[dict]) -> List[Dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError("DetectorWithTTA is for evaluation: call .eval() (train the wrapped model itself)")
        passes = self.augmented_detections(batch)
        results = []
        for index in range(len(batch)):
            merged = merge_detections([outputs[index] for outputs in passes], self.nms_thresh,
                                      self.detections_per_image, self.merge)
            first = passes[0][index]
            merged.update({key: first[key] for key in ("proposals", "objectness") if key in first})
            results.append(merged)
        return results


def with_test_time_augmentation(cfg, model: nn.Module) -> nn.Module:
    """`model` wrapped in DetectorWithTTA when TEST.AUG.ENABLED and it is a detector, else `model` itself."""
    if not cfg.TEST.AUG.ENABLED or cfg.MODEL.META_ARCHITECTURE == "Classifier":
        return model
    return DetectorWithTTA.from_config(cfg, model)
