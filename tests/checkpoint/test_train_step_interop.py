"""One training step of resdet's converted Faster R-CNN equals one of torchvision's fasterrcnn_resnet50_fpn.

Both models see the same two images at their own size (torchvision's transform scales them by exactly 1), and
every anchor and every proposal is sampled (sampler batches far above their counts), so that no randomness is
left: the four losses must agree to 1e-4 and the gradient of every trainable parameter to 1e-3, relative.
"""
from typing import Dict

import pytest
import torch
from test_detector_interop import TV_CONFIG, calibrate_norms, smooth_image, spread_heads
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

import resdet
from resdet.checkpoint.converters.torchvision_frcnn import convert
from resdet.config import setup_cfg

NUM_CLASSES = 3
IMAGE_SIZES = [(160, 192), (128, 192)]  # (h, w): the second is padded to the first
TV_MIN_SIZE, TV_MAX_SIZE = 160, 192  # min(160 / short side, 192 / long side) is 1 for both images
TRAINABLE_LAYERS = ("layer2", "layer3", "layer4")  # torchvision's trainable_backbone_layers=3, resdet's FREEZE_AT 2
PRE_NMS_TOPK, POST_NMS_TOPK = 1000, 500  # per level / per image, on both sides
EVERYTHING = 10**6  # a sampler batch larger than any anchor or proposal count
GT_BOXES = [torch.tensor([[20.0, 30.0, 90.0, 100.0], [100.0, 40.0, 180.0, 90.0], [40.0, 110.0, 72.0, 150.0]]),
            torch.tensor([[10.0, 10.0, 60.0, 110.0], [90.0, 20.0, 150.0, 70.0]])]
GT_LABELS = [torch.tensor([1, 2, 3]), torch.tensor([3, 1])]  # torchvision's 1..C (0 is its background)
LOSS_NAMES = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_loc",
              "loss_classifier": "loss_cls", "loss_box_reg": "loss_box_reg"}
PARTS = {"backbone": "backbone.bottom_up.", "FPN": "backbone.fpn.", "RPN head": "proposal_generator.rpn_head.",
         "box head": "roi_heads.box_head.", "box predictor": "roi_heads.box_predictor."}


def damp_residual_branches(model: nn.Module, factor: float = 0.1) -> None:
    """Scale the last norm of every residual branch down, as training leaves it. A random ResNet whose branches
    all add unit-variance outputs is so ill-conditioned that torchvision's own fp32 backbone gradients are 2% off
    its fp64 ones; at 0.1 they agree to 1e-6, so what differs between the two models is not rounding."""
    with torch.no_grad():
        for name, module in model.backbone.body.named_modules():
            if name.endswith(".bn3"):
                module.weight.mul_(factor)
                module.bias.mul_(factor)


def freeze_as_pretrained(model: nn.Module) -> None:
    """What fasterrcnn_resnet50_fpn builds around pretrained weights, and not for weights=None: FrozenBatchNorm2d
    for every BatchNorm2d, and only TRAINABLE_LAYERS of the ResNet learning."""
    def replace_norms(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features)
                frozen.load_state_dict(child.state_dict())
                setattr(module, name, frozen)
            else:
                replace_norms(child)

    replace_norms(model.backbone.body)
    for name, param in model.backbone.body.named_parameters():
        param.requires_grad_(name.split(".")[0] in TRAINABLE_LAYERS)


def gradients(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The gradient of every trainable parameter, by name."""
    return {name: param.grad for name, param in model.named_parameters() if param.requires_grad}


def relative_difference(ours: torch.Tensor, expected: torch.Tensor) -> float:
    """|ours - expected| / |expected| (Frobenius norms)."""
    return float((ours - expected).norm() / expected.norm())


@pytest.fixture(scope="module")
def train_step(tmp_path_factory):
    """(losses, gradients) of one step of torchvision's model, and of resdet's, all in resdet's names."""
    assert all(min(TV_MIN_SIZE / min(size), TV_MAX_SIZE / max(size)) == 1 for size in IMAGE_SIZES)
    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, min_size=TV_MIN_SIZE,
        max_size=TV_MAX_SIZE, rpn_pre_nms_top_n_train=PRE_NMS_TOPK, rpn_post_nms_top_n_train=POST_NMS_TOPK,
        rpn_batch_size_per_image=EVERYTHING, box_batch_size_per_image=EVERYTHING).eval()
    spread_heads(reference)
    images = [smooth_image(seed)[:, :height, :width] for seed, (height, width) in enumerate(IMAGE_SIZES, start=1)]
    calibrate_norms(reference, images[0] / 255)
    damp_residual_branches(reference)
    freeze_as_pretrained(reference)
    path = tmp_path_factory.mktemp("tv") / "fasterrcnn_r50_fpn.pth"
    torch.save(reference.state_dict(), path)
    model = resdet.build_model(setup_cfg(TV_CONFIG, [
        "MODEL.ROI_HEADS.NUM_CLASSES", NUM_CLASSES, "MODEL.RPN.BATCH_SIZE_PER_IMAGE", EVERYTHING,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", EVERYTHING, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", PRE_NMS_TOPK,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", POST_NMS_TOPK]))
    report = resdet.load_weights(model, str(path))
    assert not report.missing and not report.unexpected and not report.mismatched, report.summary()

    expected = reference.train()([image / 255 for image in images],
                                 [{"boxes": b, "labels": c} for b, c in zip(GT_BOXES, GT_LABELS)])
    sum(expected.values()).backward()
    losses = model.train()([{"image": image, "height": image.shape[1], "width": image.shape[2], "boxes": b,
                             "labels": c - 1} for image, b, c in zip(images, GT_BOXES, GT_LABELS)])
    sum(losses.values()).backward()
    return ({LOSS_NAMES[k]: v.detach() for k, v in expected.items()}, convert(gradients(reference)),
            {k: v.detach() for k, v in losses.items()}, gradients(model))


def test_losses_match_torchvision(train_step):
    expected, _, losses, _ = train_step
    assert set(losses) == set(expected)
    assert all(value > 0 for value in expected.values()), expected  # positives for both box losses too
    differences = {name: relative_difference(losses[name], value) for name, value in expected.items()}
    assert max(differences.values()) <= 1e-4, differences


def test_gradients_match_torchvision(train_step):
    _, expected, _, ours = train_step
    assert set(ours) == set(expected)  # the same parameters train
    assert all(gradient.norm() > 0 for gradient in expected.values())
    worst = dict.fromkeys(PARTS, 0.0)  # the largest relative difference of a parameter, per part
    for name, gradient in expected.items():
        part = next(part for part, prefix in PARTS.items() if name.startswith(prefix))
        worst[part] = max(worst[part], relative_difference(ours[name], gradient))
    assert max(worst.values()) <= 1e-3, worst
