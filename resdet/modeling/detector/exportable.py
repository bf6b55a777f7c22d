"""A FasterRCNN's eval path as a graph of tensors, for torch.export and ONNX.

The exported graph takes one image (1, 3, H, W), 0-255 in INPUT.FORMAT, already resized to the test size (the
caller resizes: `resize_for_test`, or cv2.resize to the same shape), and returns boxes (N, 4) x1y1x2y2 in that
image's pixels, scores (N,) and labels (N,). It runs the model's own modules; what differs from eager mode is only
what a symbolic graph needs: no resizing, padding by F.pad, batched NMS by torchvision's coordinate offsets, no
anchor cache, torchvision's RoIAlign kernel (see each module's `torch.compiler.is_exporting()` branch).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .rcnn import FasterRCNN


class ExportableDetector(nn.Module):
    """Wraps a FasterRCNN (eval): image (1, 3, H, W) -> (boxes (N, 4), scores (N,), labels (N,))."""

    def __init__(self, model: FasterRCNN):
        super().__init__()
        self.model = model.eval()

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        normalised = (image - model.pixel_mean) / model.pixel_std
        height, width = image.shape[-2:]
        divisor = max(model.backbone.size_divisibility, 1)
        padded = F.pad(normalised, (0, (-width) % divisor, 0, (-height) % divisor))
        padded = padded.contiguous(memory_format=torch.channels_last)  # as eval mode's batches (rcnn._pad)
        image_sizes = torch.tensor([[height, width]], device=image.device)
        features = model.backbone(padded)
        rpn = model.proposal_generator
        proposals, _ = rpn(features, tuple(padded.shape[-2:]), image_sizes)
        # a bound the graph cannot infer (the RPN keeps at most its top k): without it the RoI heads' sizes are
        # bounded only by 4 * 2^63, a constant that ONNX's int64 cannot hold
        torch._check(proposals.boxes.shape[0] <= rpn.post_nms_topk[False])
        boxes, scores, labels, _ = model.roi_heads.detect(features, proposals, image_sizes)
        return boxes, scores, labels
