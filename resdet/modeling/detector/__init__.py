"""Faster R-CNN: anchors, box coding, matching, sampling, the RPN, RoI heads and the FasterRCNN meta-architecture."""
from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .matcher import Matcher
from .rcnn import FasterRCNN
from .roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads, StandardROIHeads, build_roi_heads
from .rpn import RPN, RPNHead
from .sampler import BalancedSampler

__all__ = ["AnchorGenerator", "BoxCoder", "Matcher", "FasterRCNN", "ROI_HEADS_REGISTRY", "Res5ROIHeads",
           "StandardROIHeads", "build_roi_heads", "RPN", "RPNHead", "BalancedSampler"]
