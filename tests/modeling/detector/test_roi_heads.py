"""RoI heads: losses by hand and against torchvision, labelling, pooling, inference against torchvision."""
import math

import torch
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign

import resdet
from resdet.modeling.backbone import ShapeSpec
from resdet.modeling.detector.box_head import fast_rcnn_losses
from resdet.modeling.detector.boxes import Proposals
from resdet.modeling.detector.poolers import ROIPooler, assign_fpn_levels
from resdet.modeling.detector.roi_heads import Res5ROIHeads, StandardROIHeads

FPN_SHAPES = {f"p{k}": ShapeSpec(8, 2**k) for k in range(2, 6)}


def _fpn_heads(num_classes=3, **box_head):
    cfg = resdet.get_cfg()
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_HEADS.MIN_BOX_SIZE_TEST = 0.01
    cfg.MODEL.ROI_BOX_HEAD.update(POOLER_RESOLUTION=7, NUM_FC=2, FC_DIM=32, **box_head)
    return StandardROIHeads.from_config(cfg, FPN_SHAPES)


def _to_torchvision_layout(logits, deltas):
    """Background first in the logits and a zero background row in the deltas."""
    return torch.cat([logits[:, -1:], logits[:, :-1]], 1), torch.cat([torch.zeros(len(deltas), 4), deltas], 1)


def test_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # 2 classes + background
    deltas = torch.zeros(3, 8)
    deltas[0, :4] = torch.tensor([0.5, 0.0, 0.0, 0.0])  # class 0's deltas of RoI 0
    deltas[2, 4:] = torch.tensor([0.0, -1.0, 0.0, 0.0])  # class 1's deltas of RoI 2
    classes = torch.tensor([0, 2, 1])  # RoI 1 is background
    targets = torch.zeros(3, 4)
    losses = fast_rcnn_losses(logits, deltas, classes, targets, "smooth_l1", 0.0)
    log_sum = lambda row: math.log(sum(math.exp(v) for v in row))  # noqa: E731
    expected_cls = ((log_sum([2, 0, 0]) - 2) + (log_sum([0, 0, 1]) - 1) + (log_sum([0, 1, 0]) - 1)) / 3
    assert math.isclose(losses["loss_cls"].item(), expected_cls, rel_tol=1e-6)
    assert math.isclose(losses["loss_box_reg"].item(), (0.5 + 1.0) / 3, rel_tol=1e-6)
    agnostic = fast_rcnn_losses(logits, deltas[:, 4:], classes, targets, "l1", 0.0)
    assert math.isclose(agnostic["loss_box_reg"].item(), 1.0 / 3, rel_tol=1e-6)  # RoI 2 only has nonzero shared deltas


def test_losses_match_torchvision():
    g = torch.Generator().manual_seed(0)
    logits, deltas = torch.randn(20, 4, generator=g), torch.randn(20, 12, generator=g)
    classes, targets = torch.randint(0, 4, (20,), generator=g), torch.randn(20, 4, generator=g)
    ours = fast_rcnn_losses(logits, deltas, classes, targets, "smooth_l1", 1 / 9)
    tv_logits, tv_deltas = _to_torchvision_layout(logits, deltas)
    tv_labels = torch.where(classes == 3, 0, classes + 1)
    expected_cls, expected_box = fastrcnn_loss(tv_logits, tv_deltas, [tv_labels], [targets])
    assert torch.allclose(ours["loss_cls"], expected_cls) and torch.allclose(ours["loss_box_reg"], expected_box)


def test_label_and_sample_by_hand():
    heads = _fpn_heads(num_classes=3).train()  # IoU 0.5, 512 per image, positive fraction 0.25, gt appended
    proposals = Proposals(
        boxes=torch.tensor([[0, 0, 10, 10], [0, 0, 10, 18], [0, 0, 10, 22], [0, 0, 10, 10]], dtype=torch.float32),
        scores=torch.ones(4), image_index=torch.tensor([0, 0, 0, 1]))
    gt_boxes = [torch.tensor([[0.0, 0.0, 10.0, 20.0]]), torch.tensor([[50.0, 50.0, 60.0, 60.0]])]
    boxes, image_index, classes, targets = heads.label_and_sample(proposals, gt_boxes, [torch.tensor([2]),
                                                                                       torch.tensor([0])])
    by_box = {(tuple(b.tolist()), int(i)): int(c) for b, i, c in zip(boxes, image_index, classes)}
    assert by_box == {((0, 0, 10, 10), 0): 2,  # IoU 100 / 200 = 0.5 reaches the threshold
                      ((0, 0, 10, 18), 0): 2, ((0, 0, 10, 22), 0): 2, ((0, 0, 10, 20), 0): 2,  # last: appended gt
                      ((0, 0, 10, 10), 1): 3,  # background: image 0's ground truth is not image 1's
                      ((50, 50, 60, 60), 1): 0}
    row = [tuple(b.tolist()) for b in boxes].index((0, 0, 10, 18))
    assert torch.allclose(targets[row], torch.tensor([0.0, 10 * 1 / 18, 0.0, 5 * math.log(20 / 18)]), atol=1e-5)


def test_fpn_level_assignment_by_hand():
    sides = torch.tensor([10.0, 111.9, 112.0, 224.0, 447.0, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros(7), torch.zeros(7), sides, sides], dim=1)
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [0, 0, 1, 2, 2, 3, 3]  # levels 2, 2, 3, 4, 4, 5, 5


def test_pooler_matches_torchvision_multiscale_roi_align():
    g = torch.Generator().manual_seed(0)
    features = {f"p{k}": torch.randn(2, 8, 128 // 2**k, 160 // 2**k, generator=g) for k in range(2, 6)}
    xy = torch.rand(30, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(30, 2, generator=g) * 150 + 2], dim=1)
    image_index = torch.tensor([0] * 18 + [1] * 12)
    ours = ROIPooler(7, [4, 8, 16, 32], sampling_ratio=2, pooler_type="ROIAlign")(list(features.values()), boxes,
                                                                                 image_index)
    reference = MultiScaleRoIAlign(list(features), 7, 2)(features, [boxes[:18], boxes[18:]], [(128, 160), (128, 160)])
    assert torch.allclose(ours, reference, atol=1e-6)


def test_pooler_types_by_hand():
    feature = torch.arange(8.0).repeat(8, 1)[None, None]  # value = x index
    box, index = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0])
    pooled = {kind: ROIPooler(1, [1], 0, kind)([feature], box, index).item() for kind in ("ROIAlignV2", "ROIAlign")}
    assert math.isclose(pooled["ROIAlignV2"], 1.5) and math.isclose(pooled["ROIAlign"], 2.0)  # half-pixel shift
    assert ROIPooler(1, [1], 0, "ROIPool")([feature], box, index).item() == 4.0  # max over x in 0..4


def test_inference_matches_torchvision_postprocess():
    heads = _fpn_heads(num_classes=3).eval()
    reference = TVRoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(70, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + torch.rand(70, 2, generator=g) * 40 + 1], dim=1)
    image_index = torch.tensor([0] * 40 + [1] * 30)
    logits, deltas = torch.randn(70, 4, generator=g) * 3, torch.randn(70, 12, generator=g) * 0.5
    sizes = [(64, 80), (50, 70)]
    ours = heads.inference(logits, deltas, boxes, image_index, torch.tensor(sizes))
    expected = reference.postprocess_detections(*_to_torchvision_layout(logits, deltas), [boxes[:40], boxes[40:]],
                                                sizes)
    for index, detections in enumerate(ours):
        assert len(detections["boxes"]) > 0
        assert torch.allclose(detections["boxes"], expected[0][index], atol=1e-5)
        assert torch.allclose(detections["scores"], expected[1][index])
        assert torch.equal(detections["labels"], expected[2][index] - 1)


def test_res5_head_structure():
    cfg = resdet.get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    heads = Res5ROIHeads.from_config(cfg, {"res4": ShapeSpec(256, 16)})
    names = dict(heads.named_parameters())
    assert names["res5.0.conv1.weight"].shape == (512, 256, 3, 3) and heads.res5[0].conv1.stride == (2, 2)
    assert "res5.0.shortcut.conv.weight" in names and type(heads.res5[0].norm1).__name__ == "FrozenBatchNorm2d"
    assert names["box_predictor.cls_score.weight"].shape == (6, 512)
    assert names["box_predictor.bbox_pred.weight"].shape == (20, 512)
    pooled = heads.pooler([torch.randn(1, 256, 8, 8)], torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([0]))
    assert pooled.shape == (1, 256, 14, 14) and heads.res5(pooled).shape == (1, 512, 7, 7)
