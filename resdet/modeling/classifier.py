"""The Classifier meta-architecture: normalise, backbone, global average pool, fc."""
import torch
from torch import nn

from ..layers import weight_cache
from .backbone import Backbone, build_backbone
from .meta_arch import META_ARCH_REGISTRY


@META_ARCH_REGISTRY.register()
class Classifier(weight_cache.ForgetsOnModeSwitch):
    """Images (N,3,H,W), 0-255 in INPUT.FORMAT order, to logits (N, num_classes); any H, W >= 32."""

    def __init__(self, backbone: Backbone, num_classes: int, pixel_mean, pixel_std):
        super().__init__()
        self.backbone = backbone
        self.feature_name = backbone._out_features[-1]
        channels = backbone.output_shape()[self.feature_name].channels
        self.fc = nn.Linear(channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)
        # channels_last weights and activations: faster convolutions forward and backward, and the weight gradients
        # come out in the weights' own layout (with NCHW weights they would be converted back every step)
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg) -> "Classifier":
        """Build from cfg.MODEL.{BACKBONE,RESNETS,CLASSIFIER,PIXEL_MEAN,PIXEL_STD}."""
        return cls(build_backbone(cfg), cfg.MODEL.CLASSIFIER.NUM_CLASSES, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)
        features = self.backbone(x)[self.feature_name]  # (N, C, h, w)
        # F.linear, not onednn_linear: one (N, 2048) x (2048, classes) product, too small for the kernel to matter,
        # and the classifiers' rounding (the README's CIFAR figures) stays as it was
        return self.fc(features.mean(dim=(2, 3)))
