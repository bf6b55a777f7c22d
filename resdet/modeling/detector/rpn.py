"""Region Proposal Network: a small conv head over shared features, anchors, losses and proposal selection.

Order of proposal selection (the same as torchvision's when MIN_SIZE 1e-3, SCORE_THRESH 0, POST_NMS_PER_LEVEL
False and RANK_BY "probability"): per level and image the PRE_NMS_TOPK highest logits, decode, clip to the image,
drop boxes with a side <= 0 or < MIN_SIZE and probabilities < SCORE_THRESH, NMS per (image, level), then the
POST_NMS_TOPK best per image (or per image and level). Proposals never carry gradients.

Size rule: a side must be > 0 and >= MIN_SIZE. At MIN_SIZE 0 this is detectron2's (sides > MIN_SIZE: empty boxes,
such as those clipped to zero width at the image border, go), at 1e-3 torchvision's remove_small_boxes (sides >=
1e-3); at another positive MIN_SIZE it differs from detectron2's only for a side of exactly MIN_SIZE.
Ranking (NMS and post-NMS top-k): by logit (detectron2) or by probability (torchvision). The sigmoid is exactly
1.0 in fp32 for every logit above ~16.6, so under probability ranking confident boxes tie: batched_nms returns them
in an arbitrary order (by level, or an unstable sort's when there are many) and the post-NMS top-k keeps whichever
come first; logits keep their order.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from ...errors import ConfigError
from ...layers.weight_cache import conv2d
from ..backbone import ShapeSpec
from .anchors import AnchorGenerator
from .box_coder import BoxCoder, box_regression_loss
from .boxes import (
    Proposals,
    batched_nms,
    clip_boxes,
    first_k_per_group,
    flatten_per_image,
    nonempty_boxes_at_least,
    sort_by_image,
)
from .matcher import Matcher
from .sampler import BalancedSampler

RANKINGS = ("logit", "probability")


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 objectness (A channels) and 1x1 deltas (4A channels), shared over levels."""

    def __init__(self, in_channels: int, num_anchors: int, conv_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(conv_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(conv_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per level: logits (B, H*W*A) and deltas (B, H*W*A, 4), in the anchors' order."""
        logits, deltas = [], []
        for feature in features:
            hidden = conv2d(self.conv, feature, relu=True)
            level_logits = conv2d(self.objectness_logits, hidden)  # (B, A, H, W)
            batch, num_anchors, height, width = level_logits.shape
            logits.append(level_logits.permute(0, 2, 3, 1).reshape(batch, -1))
            level_deltas = conv2d(self.anchor_deltas, hidden).view(batch, num_anchors, 4, height, width)
            deltas.append(level_deltas.permute(0, 3, 4, 1, 2).reshape(batch, -1, 4))
        return logits, deltas


class RPN(nn.Module):
    """Proposals for a padded batch, and in training the objectness and box losses."""

    def __init__(self, in_features: Sequence[str], head: RPNHead, anchor_generator: AnchorGenerator,
                 box_coder: BoxCoder, matcher: Matcher, sampler: BalancedSampler, *,
                 pre_nms_topk: Tuple[int, int], post_nms_topk: Tuple[int, int], nms_thresh: float = 0.7,
                 min_size: float = 0.0, score_thresh: float = 0.0, post_nms_per_level: bool = False,
                 rank_by: str = "logit", loss_type: str = "smooth_l1", smooth_l1_beta: float = 0.0,
                 loss_weight: float = 1.0, boundary_thresh: float = -1):
        super().__init__()
        if rank_by not in RANKINGS:
            raise ConfigError(f"MODEL.RPN.RANK_BY: unknown {rank_by!r}; choose one of {RANKINGS}")
        self.in_features = list(in_features)
        self.rpn_head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}  # keyed by self.training
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.score_thresh = score_thresh
        self.post_nms_per_level = post_nms_per_level
        self.rank_by = rank_by
        self.loss_type = loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = loss_weight
        self.boundary_thresh = boundary_thresh

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> "RPN":
        """Build from cfg.MODEL.{RPN,ANCHOR_GENERATOR} for the backbone's output shapes."""
        r = cfg.MODEL.RPN
        missing = [f for f in r.IN_FEATURES if f not in input_shape]
        if missing:
            raise ConfigError(f"MODEL.RPN.IN_FEATURES: {missing} not among the backbone outputs {list(input_shape)}")
        channels = {input_shape[f].channels for f in r.IN_FEATURES}
        if len(channels) != 1:
            raise ConfigError(f"MODEL.RPN.IN_FEATURES: the shared head needs equal channels, got {channels}")
        anchor_generator = AnchorGenerator.from_config(cfg, [input_shape[f].stride for f in r.IN_FEATURES])
        if len(set(anchor_generator.num_anchors)) != 1:
            raise ConfigError(f"MODEL.ANCHOR_GENERATOR: the shared RPN head needs as many anchors on every level, "
                             f"got {anchor_generator.num_anchors}")
        if len(r.HEAD_CONV_DIMS) != 1:
            raise ConfigError(f"MODEL.RPN.HEAD_CONV_DIMS: exactly one conv is supported, got {list(r.HEAD_CONV_DIMS)}")
        in_channels = channels.pop()
        conv_channels = in_channels if r.HEAD_CONV_DIMS[0] == -1 else r.HEAD_CONV_DIMS[0]
        head = RPNHead(in_channels, anchor_generator.num_anchors[0], conv_channels)
        return cls(r.IN_FEATURES, head, anchor_generator, BoxCoder(r.BBOX_REG_WEIGHTS),
                   Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, r.ALLOW_LOW_QUALITY_MATCHES),
                   BalancedSampler(r.BATCH_SIZE_PER_IMAGE, r.POSITIVE_FRACTION),
                   pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
                   post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST), nms_thresh=r.NMS_THRESH,
                   min_size=r.MIN_SIZE, score_thresh=r.SCORE_THRESH, post_nms_per_level=r.POST_NMS_PER_LEVEL,
                   rank_by=r.RANK_BY, loss_type=r.BBOX_REG_LOSS_TYPE, smooth_l1_beta=r.SMOOTH_L1_BETA,
                   loss_weight=r.LOSS_WEIGHT, boundary_thresh=r.BOUNDARY_THRESH)

    def forward(self, features: Dict[str, torch.Tensor], image_shape: Tuple[int, int], image_sizes: torch.Tensor,
                gt_boxes: Optional[List[torch.Tensor]] = None) -> Tuple[Proposals, Dict[str, torch.Tensor]]:
        """Proposals of a batch padded to image_shape, whose images are image_sizes (B, 2) as (h, w)."""
        level_features = [features[f] for f in self.in_features]
        logits, deltas = self.rpn_head(level_features)
        # selection and losses in fp32 whatever the head ran in (autocast): box coordinates need its precision
        logits, deltas = [x.float() for x in logits], [x.float() for x in deltas]
        anchors = self.anchor_generator(level_features, image_shape)
        proposals = self.find_proposals(anchors, logits, deltas, image_sizes)
        if not self.training:
            return proposals, {}
        if gt_boxes is None:
            raise ValueError("RPN: training needs the ground-truth boxes of every image")
        losses = self.losses(torch.cat(anchors), torch.cat(logits, dim=1), torch.cat(deltas, dim=1), gt_boxes,
                             image_sizes)
        return proposals, losses

    @torch.no_grad()
    def find_proposals(self, anchors: List[torch.Tensor], logits: List[torch.Tensor], deltas: List[torch.Tensor],
                       image_sizes: torch.Tensor) -> Proposals:
        """Top-k per level, decode, clip, filter, NMS per (image, level), top-k per image (module docstring)."""
        num_images, device = logits[0].shape[0], logits[0].device
        batch = torch.arange(num_images, device=device)[:, None]
        top_logits, top_deltas, top_anchors = [], [], []
        for level_anchors, level_logits, level_deltas in zip(anchors, logits, deltas):
            k = min(self.pre_nms_topk[self.training], level_logits.shape[1])
            level_top, top_index = level_logits.topk(k, dim=1)  # (B, k)
            top_logits.append(level_top)
            top_deltas.append(level_deltas[batch, top_index])  # (B, k, 4)
            top_anchors.append(level_anchors[top_index])  # (B, k, 4)
        # the selected boxes of all levels are decoded and filtered together: (B * K) rows, image-major
        boxes = self.box_coder.decode(torch.cat(top_deltas, dim=1), torch.cat(top_anchors, dim=1)).reshape(-1, 4)
        selected_logits = torch.cat(top_logits, dim=1).reshape(-1)
        scores = torch.sigmoid(selected_logits)
        ranking = selected_logits if self.rank_by == "logit" else scores
        per_level = torch.tensor([t.shape[1] for t in top_logits], device=device)
        levels = torch.repeat_interleave(torch.arange(len(anchors), device=device), per_level).repeat(num_images)
        image_index = batch.expand(-1, scores.shape[0] // num_images).reshape(-1)  # shape, not len(): symbolic
        boxes = clip_boxes(boxes, image_sizes[image_index])
        keep = torch.nonzero(nonempty_boxes_at_least(boxes, self.min_size) & (scores >= self.score_thresh)).squeeze(1)
        groups = image_index[keep] * len(anchors) + levels[keep]
        keep = keep[batched_nms(boxes[keep], ranking[keep], groups, self.nms_thresh)]
        if self.post_nms_per_level:
            top = first_k_per_group(groups[keep], self.post_nms_topk[self.training], num_images * len(anchors))
        else:
            top = first_k_per_group(image_index[keep], self.post_nms_topk[self.training], num_images)
        keep = keep[top]
        keep = keep[sort_by_image(image_index[keep])]
        return Proposals(boxes[keep], scores[keep], image_index[keep])

    def label_anchors(self, anchors: torch.Tensor, gt_boxes: List[torch.Tensor],
                      image_sizes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, A) int8 labels (1 object, 0 background, -1 ignored) and (B, A, 4) matched ground-truth boxes."""
        num_images = len(gt_boxes)
        gt_flat, gt_image = flatten_per_image([b.to(anchors) for b in gt_boxes])
        counts = torch.bincount(gt_image, minlength=num_images)
        starts = counts.cumsum(0) - counts
        # (B, G_max, A) with padding rows at -1, so every image is matched in one call
        quality = anchors.new_full((num_images, int(counts.max()), len(anchors)), -1.0)
        if len(gt_flat):
            slot = torch.arange(len(gt_flat), device=anchors.device) - starts[gt_image]
            quality[gt_image, slot] = box_iou(gt_flat, anchors)
        matches, labels = self.matcher(quality)
        if self.boundary_thresh >= 0:
            labels[~self._inside_images(anchors, image_sizes)] = -1
        if not len(gt_flat):
            return labels, anchors.new_zeros((num_images, len(anchors), 4))
        return labels, gt_flat[(starts[:, None] + matches).clamp(max=len(gt_flat) - 1)]

    def _inside_images(self, anchors: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(B, A) bool: the anchor lies within the image, up to boundary_thresh pixels."""
        t = self.boundary_thresh
        heights, widths = image_sizes[:, 0:1].to(anchors), image_sizes[:, 1:2].to(anchors)  # (B, 1)
        return ((anchors[:, 0] >= -t) & (anchors[:, 1] >= -t))[None] & (anchors[:, 2] < widths + t) & (
            anchors[:, 3] < heights + t)

    def losses(self, anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, gt_boxes: List[torch.Tensor],
               image_sizes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Objectness BCE over sampled anchors and box regression over sampled positives, both divided by the
        number of sampled anchors in the batch. anchors (A, 4), logits (B, A), deltas (B, A, 4)."""
        labels, matched_gt = self.label_anchors(anchors, gt_boxes, image_sizes)
        num_images, num_anchors = labels.shape
        image_index = torch.arange(num_images, device=anchors.device).repeat_interleave(num_anchors)
        labels = labels.reshape(-1)
        positive, negative = self.sampler(labels == 1, labels == 0, image_index, num_images)
        sampled = positive | negative
        normalizer = max(int(sampled.sum()), 1)
        loss_cls = F.binary_cross_entropy_with_logits(logits.reshape(-1)[sampled], positive[sampled].to(logits.dtype),
                                                      reduction="sum")
        positive_index = torch.nonzero(positive).squeeze(1)
        positive_anchors = anchors[positive_index % num_anchors]
        targets = self.box_coder.encode(matched_gt.reshape(-1, 4)[positive_index], positive_anchors)
        loss_loc = box_regression_loss(deltas.reshape(-1, 4)[positive_index], targets, self.loss_type,
                                       self.smooth_l1_beta)
        return {"loss_rpn_cls": loss_cls * self.loss_weight / normalizer,
                "loss_rpn_loc": loss_loc * self.loss_weight / normalizer}
