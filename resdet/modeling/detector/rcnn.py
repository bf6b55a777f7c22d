"""The FasterRCNN meta-architecture: normalise, resize (eval), pad, backbone, RPN, RoI heads, map back.

Input: a list of dicts {"image": (3, H, W) 0-255 in INPUT.FORMAT, "height", "width"} (+ "boxes" (K, 4) and
"labels" (K,) in training). In training the data loader has already resized the images and their boxes, so
images are used at their given size and never resized here. In eval each image is resized by
min(MIN_SIZE_TEST / short side, MAX_SIZE_TEST / long side) (bilinear) and the detections are mapped back to
"height" x "width" (the image's own size where absent). With `return_proposals` set, each eval output also holds
the RPN's "proposals" (P, 4) and their "objectness" (P,), mapped back the same way (TEST.EVAL_PROPOSALS).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ...layers import weight_cache
from ..backbone import Backbone, build_backbone
from ..meta_arch import META_ARCH_REGISTRY
from .boxes import Proposals
from .roi_heads import ROIHeads, build_roi_heads
from .rpn import RPN


def resize_for_test(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """(C, H, W) resized (bilinear) by min(min_size / short side, max_size / long side), as eval mode does."""
    height, width = image.shape[-2:]
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                         align_corners=False)[0]


@META_ARCH_REGISTRY.register()
class FasterRCNN(weight_cache.ForgetsOnModeSwitch):
    """`backbone` -> `proposal_generator` (RPN) -> `roi_heads`; losses in training, detections in eval."""

    def __init__(self, backbone: Backbone, proposal_generator: RPN, roi_heads: ROIHeads, pixel_mean, pixel_std,
                 min_size_test: int, max_size_test: int):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.min_size_test = min_size_test
        self.max_size_test = max_size_test
        self.return_proposals = False  # eval outputs also carry the RPN's proposals (proposal recall)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        # channels_last weights, and activations (_pad): faster convolutions forward and backward (R50-FPN's training
        # step at 512 px: 2.01 s against 2.26 s in fp32, 1.09 against 1.22 s under bf16, 2 threads), NHWC max-pooling
        # (12x faster than NCHW's), and weight gradients in the weights' own layout
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg) -> "FasterRCNN":
        """Build from cfg.MODEL.{BACKBONE,RESNETS,FPN,ANCHOR_GENERATOR,RPN,ROI_HEADS,ROI_BOX_HEAD} and INPUT."""
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        return cls(backbone, RPN.from_config(cfg, shapes), build_roi_heads(cfg, shapes), cfg.MODEL.PIXEL_MEAN,
                   cfg.MODEL.PIXEL_STD, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)

    def forward(self, batch: List[dict]):
        """Training: {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}. Eval: one dict per image."""
        if not self.training:
            return self.inference(batch)
        images, image_sizes = self.preprocess(batch)
        features = self.backbone(images)
        gt_boxes, gt_labels = self._targets(batch)
        proposals, proposal_losses = self.proposal_generator(features, tuple(images.shape[-2:]), image_sizes, gt_boxes)
        _, detector_losses = self.roi_heads(features, proposals, image_sizes, gt_boxes, gt_labels)
        return {**proposal_losses, **detector_losses}

    def inference(self, batch: List[dict], min_size: Optional[int] = None,
                  max_size: Optional[int] = None) -> List[Dict[str, torch.Tensor]]:
        """Eval detections, one dict per image in its "height" x "width" pixels, with each image resized as
        `resize_for_test(image, min_size, max_size)` (default: INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)."""
        sizes = (self.min_size_test if min_size is None else min_size,
                 self.max_size_test if max_size is None else max_size)
        images, image_sizes = self.preprocess(batch, sizes)
        features = self.backbone(images)
        proposals, _ = self.proposal_generator(features, tuple(images.shape[-2:]), image_sizes, None)
        detections, _ = self.roi_heads(features, proposals, image_sizes)
        if self.return_proposals:
            detections = [{**detection, **image_proposals}
                          for detection, image_proposals in zip(detections, _per_image(proposals, len(batch)))]
        return self.postprocess(detections, batch, image_sizes)

    def preprocess(self, batch: List[dict], test_sizes: Optional[Tuple[int, int]] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised (B, 3, H, W) zero-padded to the backbone's size divisibility, and (B, 2) (h, w) sizes; each
        image resized by `resize_for_test(image, *test_sizes)` in eval (default INPUT.{MIN,MAX}_SIZE_TEST)."""
        if not batch:
            raise ValueError("FasterRCNN: empty batch")
        test_sizes = test_sizes or (self.min_size_test, self.max_size_test)
        images = []
        for item in batch:
            image = (item["image"].to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
            images.append(image if self.training else resize_for_test(image, *test_sizes))
        sizes = torch.tensor([image.shape[-2:] for image in images], device=self.pixel_mean.device)
        return self._pad(images), sizes

    def _pad(self, images: List[torch.Tensor]) -> torch.Tensor:
        divisor = max(self.backbone.size_divisibility, 1)
        height = -(-max(image.shape[-2] for image in images) // divisor) * divisor
        width = -(-max(image.shape[-1] for image in images) // divisor) * divisor
        # channels_last, as the weights: the RPN head's (B, A, H, W) outputs then also flatten to the anchors'
        # (cell, anchor) order without a copy
        padded = torch.empty((len(images), images[0].shape[0], height, width), dtype=images[0].dtype,
                             device=images[0].device, memory_format=torch.channels_last).zero_()
        for slot, image in zip(padded, images):
            slot[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return padded

    def _targets(self, batch: List[dict]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        missing = [key for key in ("boxes", "labels") if any(key not in item for item in batch)]
        if missing:
            raise KeyError(f"FasterRCNN: training inputs need {missing} in every dict (see DESIGN.md Python API)")
        device = self.pixel_mean.device
        boxes = [torch.as_tensor(item["boxes"], dtype=torch.float32, device=device).reshape(-1, 4) for item in batch]
        labels = [torch.as_tensor(item["labels"], dtype=torch.int64, device=device).reshape(-1) for item in batch]
        return boxes, labels

    @staticmethod
    def postprocess(detections: List[Dict[str, torch.Tensor]], batch: List[dict],
                    image_sizes: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """Scale boxes (and proposals) from the resized input back to each image's "height" x "width"."""
        results = []
        for detection, item, (resized_h, resized_w) in zip(detections, batch, image_sizes.tolist()):
            height = item.get("height", item["image"].shape[-2])
            width = item.get("width", item["image"].shape[-1])
            ratio_h = torch.tensor(height, dtype=torch.float32) / torch.tensor(resized_h, dtype=torch.float32)
            ratio_w = torch.tensor(width, dtype=torch.float32) / torch.tensor(resized_w, dtype=torch.float32)
            scale = torch.stack([ratio_w, ratio_h, ratio_w, ratio_h]).to(detection["boxes"])
            scaled = {key: detection[key] * scale for key in ("boxes", "proposals") if key in detection}
            results.append({**detection, **scaled})
        return results


def _per_image(proposals: Proposals, num_images: int) -> List[Dict[str, torch.Tensor]]:
    """The batch's flat proposals split into {"proposals" (P, 4), "objectness" (P,)} per image, in RPN rank order."""
    counts = torch.bincount(proposals.image_index, minlength=num_images).tolist()
    return [{"proposals": boxes, "objectness": scores}
            for boxes, scores in zip(proposals.boxes.split(counts), proposals.scores.split(counts))]
