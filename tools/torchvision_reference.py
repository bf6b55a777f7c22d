"""torchvision's models of a resdet config's architecture, carrying the resdet model's weights: the reference
that tools/benchmark.py times resdet against."""
from typing import Callable

import torch
import torchvision
from torch import nn

from resdet.checkpoint.converters.torchvision_frcnn import rename as frcnn_to_resdet
from resdet.checkpoint.converters.torchvision_resnet import rename as resnet_to_resdet
from resdet.errors import UsageError

PREDICTOR = "roi_heads.box_predictor."


class Normalized(nn.Module):
    """A torchvision classifier fed resdet's input: 0-255 images normalised with MODEL.PIXEL_MEAN/STD."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def _check_reference(cfg, backbone_name: str) -> None:
    """Refuse configs that no torchvision model reproduces."""
    r = cfg.MODEL.RESNETS
    wanted = {"MODEL.BACKBONE.NAME": (cfg.MODEL.BACKBONE.NAME, backbone_name),
              "MODEL.RESNETS.RESIDUAL": (r.RESIDUAL, True), "MODEL.RESNETS.SHORTCUT": (r.SHORTCUT, "B"),
              "MODEL.RESNETS.NUM_GROUPS": (r.NUM_GROUPS, 1), "MODEL.RESNETS.WIDTH_PER_GROUP": (r.WIDTH_PER_GROUP, 64),
              "MODEL.RESNETS.RES5_DILATION": (r.RES5_DILATION, 1)}
    for key, (value, needed) in wanted.items():
        if value != needed:
            raise UsageError(f"--compare torchvision: torchvision has no model with {key} {value!r} (needs {needed!r})")


def torchvision_trunk(cfg, **kwargs) -> nn.Module:
    """torchvision.models.resnet{depth}, its stride moved to the first 1x1 conv of a block under STRIDE_IN_1X1."""
    r = cfg.MODEL.RESNETS
    norm = {"FrozenBN": torchvision.ops.FrozenBatchNorm2d, "BN": nn.BatchNorm2d}.get(r.NORM)
    if norm is None:
        raise UsageError(f"--compare torchvision: MODEL.RESNETS.NORM {r.NORM!r} unsupported; use BN or FrozenBN")
    trunk = getattr(torchvision.models, f"resnet{r.DEPTH}")(norm_layer=norm, **kwargs)
    if r.DEPTH >= 50 and r.STRIDE_IN_1X1:
        for stage in (trunk.layer2, trunk.layer3, trunk.layer4):
            stage[0].conv1.stride, stage[0].conv2.stride = stage[0].conv2.stride, (1, 1)
    return trunk


def load_from_resdet(reference: nn.Module, ours: nn.Module, to_resdet: Callable[[str], str]) -> None:
    """Copy every reference weight from the resdet key `to_resdet(key)`; the box predictor's rows are reordered
    (torchvision's background is row 0 of cls_score and has 4 bbox_pred rows, resdet's is last and has none)."""
    ours_state, state = ours.state_dict(), {}
    for key, value in reference.state_dict().items():
        source = ours_state.get(to_resdet(key))
        if key.startswith(PREDICTOR + "cls_score."):
            source = torch.cat([source[-1:], source[:-1]])
        elif key.startswith(PREDICTOR + "bbox_pred."):
            source = torch.cat([value[:4], source])
        if source is None or source.shape != value.shape:
            if key.endswith("num_batches_tracked"):
                continue
            raise ValueError(f"--compare torchvision: no resdet weight of shape {tuple(value.shape)} for {key!r}")
        state[key] = source
    reference.load_state_dict(state, strict=False)


def torchvision_classifier(cfg, ours: nn.Module) -> nn.Module:
    """torchvision's ResNet with the resdet Classifier's weights, taking the same 0-255 input."""
    _check_reference(cfg, "build_resnet_backbone")
    model = torchvision_trunk(cfg, num_classes=cfg.MODEL.CLASSIFIER.NUM_CLASSES)
    load_from_resdet(model, ours, resnet_to_resdet)
    return Normalized(model, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)


def torchvision_detector(cfg, ours: nn.Module, min_size: int, max_size: int) -> nn.Module:
    """torchvision's FasterRCNN with a ResNet-FPN backbone built like the config's, with the resdet weights."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    _check_reference(cfg, "build_resnet_fpn_backbone")
    m, b = cfg.MODEL, cfg.MODEL.ROI_BOX_HEAD
    if m.ROI_HEADS.NAME != "StandardROIHeads" or b.NUM_FC != 2 or b.CLS_AGNOSTIC_BBOX_REG or not m.FPN.TOP_BLOCK:
        raise UsageError("--compare torchvision: needs StandardROIHeads, ROI_BOX_HEAD.NUM_FC 2 with per-class boxes "
                         "and FPN.TOP_BLOCK maxpool")
    trunk = torchvision_trunk(cfg)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:5 - m.BACKBONE.FREEZE_AT]
    for name, parameter in trunk.named_parameters():
        parameter.requires_grad_(any(name.startswith(layer) for layer in trainable) or not m.BACKBONE.FREEZE_AT)
    shapes = ours.backbone.bottom_up.output_shape()
    backbone = BackboneWithFPN(trunk, {f"layer{i}": str(i - 1) for i in range(1, 5)},
                               [shapes[f].channels for f in m.FPN.IN_FEATURES], m.FPN.OUT_CHANNELS,
                               extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelMaxPool())
    levels = len(m.RPN.IN_FEATURES)
    sizes = [tuple(s) for s in m.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(r) for r in m.ANCHOR_GENERATOR.ASPECT_RATIOS]
    anchors = AnchorGenerator(tuple(sizes * levels if len(sizes) == 1 else sizes),
                              tuple(ratios * levels if len(ratios) == 1 else ratios))
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], b.POOLER_RESOLUTION, b.POOLER_SAMPLING_RATIO)
    channels = m.FPN.OUT_CHANNELS * b.POOLER_RESOLUTION ** 2
    r, h = m.RPN, m.ROI_HEADS
    model = FasterRCNN(
        backbone, min_size=min_size, max_size=max_size, image_mean=[v / 255 for v in m.PIXEL_MEAN],
        image_std=[v / 255 for v in m.PIXEL_STD], rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=r.PRE_NMS_TOPK_TRAIN, rpn_pre_nms_top_n_test=r.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=r.POST_NMS_TOPK_TRAIN, rpn_post_nms_top_n_test=r.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=r.NMS_THRESH, rpn_fg_iou_thresh=r.IOU_THRESHOLDS[-1], rpn_bg_iou_thresh=r.IOU_THRESHOLDS[0],
        rpn_batch_size_per_image=r.BATCH_SIZE_PER_IMAGE, rpn_positive_fraction=r.POSITIVE_FRACTION,
        rpn_score_thresh=r.SCORE_THRESH, box_roi_pool=pooler, box_head=TwoMLPHead(channels, b.FC_DIM),
        box_predictor=FastRCNNPredictor(b.FC_DIM, h.NUM_CLASSES + 1), box_score_thresh=h.SCORE_THRESH_TEST,
        box_nms_thresh=h.NMS_THRESH_TEST, box_detections_per_img=h.DETECTIONS_PER_IMAGE,
        box_fg_iou_thresh=h.IOU_THRESHOLDS[-1], box_bg_iou_thresh=h.IOU_THRESHOLDS[0],
        box_batch_size_per_image=h.BATCH_SIZE_PER_IMAGE, box_positive_fraction=h.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(b.BBOX_REG_WEIGHTS))
    load_from_resdet(model, ours, frcnn_to_resdet)
    return model.to(next(ours.parameters()).device)
