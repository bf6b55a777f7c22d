"""RoI heads: label and sample proposals, pool region features, classify and refine boxes, post-process.

Classes are contiguous 0..C-1 outside; internally the background is class C (the last logit).
Inference order (torchvision's): softmax, decode per class, clip, score > SCORE_THRESH_TEST, remove boxes with a
side < MIN_BOX_SIZE_TEST, NMS per (image, class), the DETECTIONS_PER_IMAGE best per image.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fvcore.common.registry import Registry
from torch import nn
from torchvision.ops import box_iou

from ...errors import ConfigError
from ..backbone import ShapeSpec
from ..backbone.resnet import init_weights, make_stage, resnet_stage_specs
from .box_coder import BoxCoder
from .box_head import FastRCNNPredictor, FCBoxHead, fast_rcnn_losses
from .boxes import (
    Proposals,
    batched_nms,
    boxes_at_least,
    clip_boxes,
    first_k_per_group,
    flatten_per_image,
    sort_by_image,
)
from .matcher import Matcher
from .poolers import ROIPooler
from .sampler import BalancedSampler

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """RoI head classes with `from_config(cfg, input_shape)`, named by MODEL.ROI_HEADS.NAME."""


class ROIHeads(nn.Module):
    """What both heads share; a subclass defines `box_features` (pooled regions to (R, D) vectors)."""

    def __init__(self, in_features: Sequence[str], pooler: ROIPooler, box_predictor: FastRCNNPredictor,
                 matcher: Matcher, sampler: BalancedSampler, box_coder: BoxCoder, *, proposal_append_gt: bool = True,
                 loss_type: str = "smooth_l1", smooth_l1_beta: float = 0.0, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_image: int = 100, min_box_size: float = 0.0):
        super().__init__()
        self.in_features = list(in_features)
        self.pooler = pooler
        self.box_predictor = box_predictor
        self.num_classes = box_predictor.num_classes
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.proposal_append_gt = proposal_append_gt
        self.loss_type = loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.min_box_size = min_box_size

    @staticmethod
    def shared_config(cfg) -> dict:
        """Keyword arguments of ROIHeads from cfg.MODEL.{ROI_HEADS,ROI_BOX_HEAD}, pooler and predictor aside."""
        h, b = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
        return dict(matcher=Matcher(h.IOU_THRESHOLDS, h.IOU_LABELS, allow_low_quality_matches=False),
                    sampler=BalancedSampler(h.BATCH_SIZE_PER_IMAGE, h.POSITIVE_FRACTION),
                    box_coder=BoxCoder(b.BBOX_REG_WEIGHTS), proposal_append_gt=h.PROPOSAL_APPEND_GT,
                    loss_type=b.BBOX_REG_LOSS_TYPE, smooth_l1_beta=b.SMOOTH_L1_BETA,
                    score_thresh=h.SCORE_THRESH_TEST, nms_thresh=h.NMS_THRESH_TEST,
                    detections_per_image=h.DETECTIONS_PER_IMAGE, min_box_size=h.MIN_BOX_SIZE_TEST)

    def box_features(self, features: List[torch.Tensor], boxes: torch.Tensor,
                     image_index: torch.Tensor) -> torch.Tensor:
        """(R, D) features of boxes (R, 4) of images image_index (R,)."""
        raise NotImplementedError

    def forward(self, features: Dict[str, torch.Tensor], proposals: Proposals, image_sizes: torch.Tensor,
                gt_boxes: Optional[List[torch.Tensor]] = None, gt_labels: Optional[List[torch.Tensor]] = None
                ) -> Tuple[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]:
        """Training: ([], losses). Eval: (one {"boxes", "scores", "labels"} per image in input pixels, {})."""
        level_features = [features[f] for f in self.in_features]
        if self.training:
            if gt_boxes is None or gt_labels is None:
                raise ValueError("ROIHeads: training needs the ground-truth boxes and labels of every image")
            boxes, image_index, classes, targets = self.label_and_sample(proposals, gt_boxes, gt_labels)
            logits, deltas = self._predict(level_features, boxes, image_index)
            return [], fast_rcnn_losses(logits, deltas, classes, targets, self.loss_type, self.smooth_l1_beta)
        logits, deltas = self._predict(level_features, proposals.boxes, proposals.image_index)
        return self.inference(logits, deltas, proposals.boxes, proposals.image_index, image_sizes), {}

    def detect(self, features: Dict[str, torch.Tensor], proposals: Proposals,
               image_sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eval: the batch's detections as flat tensors (`batch_detections`), for an exported graph."""
        level_features = [features[f] for f in self.in_features]
        logits, deltas = self._predict(level_features, proposals.boxes, proposals.image_index)
        return self.batch_detections(logits, deltas, proposals.boxes, proposals.image_index, image_sizes)

    def _predict(self, features: List[torch.Tensor], boxes: torch.Tensor,
                 image_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R, C+1) logits and (R, 4C or 4) deltas in fp32, whatever the head ran in (autocast)."""
        logits, deltas = self.box_predictor(self.box_features(features, boxes, image_index))
        return logits.float(), deltas.float()

    @torch.no_grad()
    def label_and_sample(self, proposals: Proposals, gt_boxes: List[torch.Tensor], gt_labels: List[torch.Tensor]
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled boxes (S, 4), their image (S,), class targets (S,) in 0..C and box targets (S, 4)."""
        num_images = len(gt_boxes)
        gt_flat, gt_image = flatten_per_image([b.to(proposals.boxes) for b in gt_boxes])
        gt_classes = torch.cat([torch.as_tensor(c) for c in gt_labels]).to(gt_image.device, torch.int64)
        boxes, image_index = proposals.boxes, proposals.image_index
        if self.proposal_append_gt:
            boxes, image_index = torch.cat([boxes, gt_flat]), torch.cat([image_index, gt_image])
        classes, matches = self._classify(boxes, image_index, gt_flat, gt_image, gt_classes)
        positive = (classes >= 0) & (classes < self.num_classes)
        sampled_pos, sampled_neg = self.sampler(positive, classes == self.num_classes, image_index, num_images)
        chosen = torch.nonzero(sampled_pos | sampled_neg).squeeze(1)
        targets = boxes.new_zeros((len(chosen), 4))
        chosen_pos = sampled_pos[chosen]
        targets[chosen_pos] = self.box_coder.encode(gt_flat[matches[chosen[chosen_pos]]], boxes[chosen[chosen_pos]])
        return boxes[chosen], image_index[chosen], classes[chosen], targets

    def _classify(self, boxes: torch.Tensor, image_index: torch.Tensor, gt_boxes: torch.Tensor, gt_image: torch.Tensor,
                  gt_classes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(R,) class targets (C background, -1 ignored) and (R,) index of the matched ground truth."""
        if not len(gt_boxes):
            matches = torch.zeros_like(image_index)
            return torch.full_like(image_index, self.num_classes), matches
        quality = box_iou(gt_boxes, boxes)  # (G, R) over the whole batch
        quality[gt_image[:, None] != image_index[None, :]] = -1.0  # another image's box is no match
        matches, match_labels = self.matcher(quality)
        classes = gt_classes[matches]
        classes[match_labels == 0] = self.num_classes
        classes[match_labels == -1] = -1
        return classes, matches

    @torch.no_grad()
    def inference(self, logits: torch.Tensor, deltas: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor,
                  image_sizes: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """Detections per image (module docstring); logits (R, C+1), deltas (R, 4C or 4), boxes (R, 4)."""
        pred, scores, labels, images = self.batch_detections(logits, deltas, boxes, image_index, image_sizes)
        counts = torch.bincount(images, minlength=len(image_sizes)).tolist()
        return [{"boxes": b, "scores": s, "labels": c}
                for b, s, c in zip(pred.split(counts), scores.split(counts), labels.split(counts))]

    @torch.no_grad()
    def batch_detections(self, logits: torch.Tensor, deltas: torch.Tensor, boxes: torch.Tensor,
                         image_index: torch.Tensor, image_sizes: torch.Tensor
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The detections of the whole batch as boxes (N, 4), scores (N,), labels (N,) and image (N,), grouped by
        image: tensors only, which an exported graph can return (`inference` splits them per image)."""
        num_rois, num_classes, num_images = boxes.shape[0], self.num_classes, len(image_sizes)  # shape: symbolic
        scores = F.softmax(logits, dim=-1)[:, :num_classes]  # (R, C): background column dropped
        per_class = deltas.view(num_rois, deltas.shape[1] // 4, 4)  # (R, C or 1, 4)
        pred = self.box_coder.decode(per_class, boxes[:, None, :]).expand(num_rois, num_classes, 4)
        pred = clip_boxes(pred, image_sizes[image_index][:, None, :]).reshape(-1, 4)
        scores = scores.reshape(-1)
        labels = torch.arange(num_classes, device=boxes.device).repeat(num_rois)
        images = image_index.repeat_interleave(num_classes)
        keep = torch.nonzero((scores > self.score_thresh) & boxes_at_least(pred, self.min_box_size)).squeeze(1)
        keep = keep[batched_nms(pred[keep], scores[keep], images[keep] * num_classes + labels[keep], self.nms_thresh)]
        keep = keep[first_k_per_group(images[keep], self.detections_per_image, num_images)]
        keep = keep[sort_by_image(images[keep])]
        return pred[keep], scores[keep], labels[keep], images[keep]


def _pooler(cfg, input_shape: Dict[str, ShapeSpec]) -> ROIPooler:
    b = cfg.MODEL.ROI_BOX_HEAD
    missing = [f for f in cfg.MODEL.ROI_HEADS.IN_FEATURES if f not in input_shape]
    if missing:
        raise ConfigError(f"MODEL.ROI_HEADS.IN_FEATURES: {missing} not among the backbone outputs {list(input_shape)}")
    strides = [input_shape[f].stride for f in cfg.MODEL.ROI_HEADS.IN_FEATURES]
    return ROIPooler(b.POOLER_RESOLUTION, strides, b.POOLER_SAMPLING_RATIO, b.POOLER_TYPE)


def _predictor(cfg, in_features: int) -> FastRCNNPredictor:
    return FastRCNNPredictor(in_features, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG)


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeads(ROIHeads):
    """The paper's C4 head: RoI pooling on res4, the res5 stage (`res5`) per region, global average pooling."""

    def __init__(self, res5: nn.Sequential, **kwargs):
        super().__init__(**kwargs)
        self.res5 = res5

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "Res5ROIHeads":
        """Build res5 like the backbone's (depth, norm, stride_in_1x1), with stride 2 in its first block."""
        if len(cfg.MODEL.ROI_HEADS.IN_FEATURES) != 1:
            raise ConfigError(f"MODEL.ROI_HEADS.IN_FEATURES: Res5ROIHeads pools one feature map, "
                             f"got {list(cfg.MODEL.ROI_HEADS.IN_FEATURES)}")
        if cfg.MODEL.RESNETS.RES5_DILATION != 1:
            raise ConfigError("MODEL.RESNETS.RES5_DILATION: Res5ROIHeads needs 1 (res5 halves the pooled regions)")
        spec = resnet_stage_specs(cfg, cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, 4)[3]
        channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
        if spec["in_channels"] != channels:
            raise ConfigError(f"MODEL.ROI_HEADS.IN_FEATURES: res5 expects {spec['in_channels']} channels, "
                             f"the feature has {channels}")
        res5 = make_stage(**spec)
        init_weights(res5, cfg.MODEL.RESNETS.ZERO_INIT_RESIDUAL)
        return cls(res5, in_features=cfg.MODEL.ROI_HEADS.IN_FEATURES, pooler=_pooler(cfg, input_shape),
                   box_predictor=_predictor(cfg, spec["out_channels"]), **cls.shared_config(cfg))

    def box_features(self, features: List[torch.Tensor], boxes: torch.Tensor,
                     image_index: torch.Tensor) -> torch.Tensor:
        return self.res5(self.pooler(features, boxes, image_index)).mean(dim=(2, 3))


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(ROIHeads):
    """The FPN head: multi-level RoIAlign, `box_head` (fc1, fc2, ...), then the predictor."""

    def __init__(self, box_head: FCBoxHead, **kwargs):
        super().__init__(**kwargs)
        self.box_head = box_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "StandardROIHeads":
        """Build from cfg.MODEL.{ROI_HEADS,ROI_BOX_HEAD}; every input level has the same channels."""
        b = cfg.MODEL.ROI_BOX_HEAD
        pooler = _pooler(cfg, input_shape)
        channels = {input_shape[f].channels for f in cfg.MODEL.ROI_HEADS.IN_FEATURES}
        if len(channels) != 1:
            raise ConfigError(f"MODEL.ROI_HEADS.IN_FEATURES: levels need equal channels, got {channels}")
        box_head = FCBoxHead(channels.pop(), b.POOLER_RESOLUTION, b.NUM_FC, b.FC_DIM)
        return cls(box_head, in_features=cfg.MODEL.ROI_HEADS.IN_FEATURES, pooler=pooler,
                   box_predictor=_predictor(cfg, box_head.output_size), **cls.shared_config(cfg))

    def box_features(self, features: List[torch.Tensor], boxes: torch.Tensor,
                     image_index: torch.Tensor) -> torch.Tensor:
        return self.box_head(self.pooler(features, boxes, image_index))


def build_roi_heads(cfg, input_shape: Dict[str, ShapeSpec]) -> ROIHeads:
    """The RoI heads named by cfg.MODEL.ROI_HEADS.NAME."""
    name = cfg.MODEL.ROI_HEADS.NAME
    if name not in ROI_HEADS_REGISTRY:
        known = ", ".join(sorted(k for k, _ in ROI_HEADS_REGISTRY))
        raise ConfigError(f"MODEL.ROI_HEADS.NAME: unknown {name!r}; registered: {known}")
    return ROI_HEADS_REGISTRY.get(name).from_config(cfg, input_shape)
