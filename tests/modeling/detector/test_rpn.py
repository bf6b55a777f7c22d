"""RPN: head channel order, losses by hand, proposal selection by hand and against torchvision's RPN."""
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

import resdet
from resdet.config import setup_cfg
from resdet.modeling.backbone import ShapeSpec
from resdet.modeling.detector.rpn import RPN

SHAPES = {"p2": ShapeSpec(8, 4), "p3": ShapeSpec(8, 8)}
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _cfg(**rpn):
    cfg = resdet.get_cfg()
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32]]
    for key, value in rpn.items():
        cfg.MODEL.RPN[key] = value
    return cfg


def test_head_channels_follow_anchor_order():
    rpn = RPN.from_config(_cfg(), SHAPES)
    head = rpn.rpn_head
    with torch.no_grad():
        head.objectness_logits.weight.zero_()
        head.objectness_logits.bias.copy_(torch.arange(3.0))  # channel a -> value a
        head.anchor_deltas.weight.zero_()
        head.anchor_deltas.bias.copy_(torch.arange(12.0))  # anchor a, coordinate c -> 4a + c
    logits, deltas = head([torch.randn(2, 8, 2, 3)])
    assert logits[0].shape == (2, 2 * 3 * 3) and deltas[0].shape == (2, 18, 4)
    assert logits[0][1].tolist() == [0.0, 1.0, 2.0] * 6  # per location, anchors 0..A-1
    assert deltas[0][0, 4].tolist() == [4.0, 5.0, 6.0, 7.0]  # location 1, anchor 1


def test_losses_by_hand():
    rpn = RPN.from_config(_cfg(), SHAPES)  # IoU [0.3, 0.7], L1 box loss (beta 0)
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60], [30, 30, 40, 40]], dtype=torch.float32)
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    deltas = torch.zeros(1, 4, 4)
    deltas[0, 0] = torch.tensor([0.1, 0.0, 0.0, -0.2])
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]  # anchor 0: IoU 1 (positive); 1: 0.5 (ignored); 2, 3: 0
    losses = rpn.losses(anchors, logits, deltas, gt, torch.tensor([[100, 100]]))
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected_cls = (softplus(-2.0) + softplus(-1.0) + softplus(1.0)) / 3
    assert math.isclose(losses["loss_rpn_cls"].item(), expected_cls, rel_tol=1e-6)
    assert math.isclose(losses["loss_rpn_loc"].item(), 0.3 / 3, rel_tol=1e-6)
    empty = rpn.losses(anchors, logits, deltas, [torch.zeros(0, 4)], torch.tensor([[100, 100]]))
    assert math.isclose(empty["loss_rpn_cls"].item(), sum(softplus(x) for x in (2.0, 0.0, -1.0, 1.0)) / 4, rel_tol=1e-6)
    assert empty["loss_rpn_loc"].item() == 0.0


def test_proposals_by_hand():
    rpn = RPN.from_config(_cfg(MIN_SIZE=6.0, POST_NMS_TOPK_TEST=5), SHAPES).eval()
    anchors = [torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [30, 20, 50, 40]], dtype=torch.float32)]
    logits = [torch.tensor([[3.0, 2.0, 1.0, 0.0]])]
    proposals = rpn.find_proposals(anchors, logits, [torch.zeros(1, 4, 4)], torch.tensor([[40, 35]]))
    # anchor 1 is suppressed by anchor 0 (IoU 0.82); anchor 3 is clipped to 5 x 20, below MIN_SIZE
    assert proposals.boxes.tolist() == [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert torch.allclose(proposals.scores, torch.sigmoid(torch.tensor([3.0, 1.0])))
    assert proposals.image_index.tolist() == [0, 0]


# hand-made proposals of a 40 x 50 (h x w) image, by name, in decreasing logit order
SIZE_RULE_BOXES = {
    "inside": [0.0, 0.0, 10.0, 10.0],
    "clipped to 2 px at the right border": [48.0, 5.0, 60.0, 15.0],
    "beyond the right border (width 0 once clipped)": [55.0, 5.0, 70.0, 15.0],
    "beyond the left border (width 0 once clipped)": [-10.0, 20.0, -2.0, 30.0],
    "below the bottom border (height 0 once clipped)": [20.0, 45.0, 30.0, 60.0],
    "width 1e-3": [0.0, 30.0, 1e-3, 38.0],
    "width 5e-4": [10.0, 30.0, 10.0005, 38.0],
    "negative width": [30.0, 30.0, 25.0, 38.0],
}
SIZE_RULE_IMAGE = (40, 50)
EMPTY_BOXES = {"beyond the right border (width 0 once clipped)", "beyond the left border (width 0 once clipped)",
               "below the bottom border (height 0 once clipped)", "negative width"}


def _detectron2_nonempty(boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """detectron2's Boxes.nonempty: both sides strictly larger than the threshold (find_top_rpn_proposals)."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("config", ["torchvision/frcnn_r50_fpn.yaml", *sorted(
    str(p.relative_to(CONFIGS)) for p in (CONFIGS / "detectron2").glob("*.yaml"))])
def test_size_rule_reproduces_each_reference(config, training):
    """Each interop config's MIN_SIZE gives its reference's filter; empty boxes go whatever MIN_SIZE says."""
    min_size = setup_cfg(str(CONFIGS / config), []).MODEL.RPN.MIN_SIZE
    rpn = RPN.from_config(_cfg(MIN_SIZE=min_size, NMS_THRESH=1.0), SHAPES).train(training)
    anchors = torch.tensor(list(SIZE_RULE_BOXES.values()))
    logits = -torch.arange(float(len(anchors)))[None]
    deltas = torch.zeros(1, len(anchors), 4)
    proposals = rpn.find_proposals([anchors], [logits], [deltas], torch.tensor([SIZE_RULE_IMAGE]))
    clipped = clip_boxes_to_image(rpn.box_coder.decode(deltas[0], anchors), SIZE_RULE_IMAGE)
    if config.startswith("torchvision"):
        expected = remove_small_boxes(clipped, min_size)
        dropped = EMPTY_BOXES | {"width 5e-4"}
    else:
        expected = torch.nonzero(_detectron2_nonempty(clipped, min_size)).squeeze(1)
        dropped = EMPTY_BOXES
    names = list(SIZE_RULE_BOXES)
    assert [names[i] for i in expected.tolist()] == [name for name in names if name not in dropped]
    assert torch.equal(proposals.boxes, clipped[expected])


@pytest.mark.parametrize("rank_by", ["logit", "probability"])
def test_saturated_logits_tie_rule(rank_by):
    """Logits 20 and 25 both have probability exactly 1.0: ranking by logit keeps the 25 box, ranking by probability
    keeps whichever comes first, as torchvision's RPN does (its filter_proposals on the same boxes)."""
    rpn = RPN.from_config(_cfg(RANK_BY=rank_by, POST_NMS_TOPK_TEST=1), SHAPES).eval()
    anchors = [torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[1.0, 0.0, 21.0, 20.0]])]  # IoU 0.9
    logits = [torch.tensor([[20.0]]), torch.tensor([[25.0]])]  # one box per level: NMS (per level) keeps both
    assert torch.sigmoid(logits[0]) == torch.sigmoid(logits[1]) == 1.0
    proposals = rpn.find_proposals(anchors, logits, [torch.zeros(1, 1, 4)] * 2, torch.tensor([[40, 40]]))
    if rank_by == "logit":
        assert proposals.boxes.tolist() == anchors[1].tolist()
        return
    reference = RegionProposalNetwork(TVAnchorGenerator(((16,), (32,)), ((1.0,),) * 2), TVRPNHead(8, 1), 0.7, 0.3,
                                      256, 0.5, dict(training=10, testing=10), dict(training=1, testing=1), 0.7).eval()
    expected, expected_scores = reference.filter_proposals(torch.cat(anchors)[None], torch.cat(logits, dim=1),
                                                           [(40, 40)], [1, 1])
    boxes, probabilities = torch.cat(anchors), torch.sigmoid(torch.cat(logits, dim=1)[0])
    first = batched_nms(boxes, probabilities, torch.tensor([0, 1]), 0.7)[:1]
    assert expected[0].tolist() == boxes[first].tolist() == anchors[0].tolist()
    assert torch.equal(proposals.boxes, expected[0]) and torch.equal(proposals.scores, expected_scores[0])


def _torchvision_pair(batch_size_per_image=256):
    cfg = _cfg(MIN_SIZE=1e-3, PRE_NMS_TOPK_TRAIN=100, PRE_NMS_TOPK_TEST=50, POST_NMS_TOPK_TRAIN=60,
               POST_NMS_TOPK_TEST=30, SMOOTH_L1_BETA=1 / 9, BATCH_SIZE_PER_IMAGE=batch_size_per_image)
    cfg.MODEL.ANCHOR_GENERATOR.ROUND_CELL_ANCHORS = True
    cfg.MODEL.ANCHOR_GENERATOR.STRIDE_FROM_IMAGE = True
    torch.manual_seed(0)
    ours = RPN.from_config(cfg, SHAPES)
    head = TVRPNHead(8, 3)
    with torch.no_grad():
        head.conv[0][0].weight.copy_(ours.rpn_head.conv.weight)
        head.cls_logits.weight.copy_(ours.rpn_head.objectness_logits.weight)
        head.bbox_pred.weight.copy_(ours.rpn_head.anchor_deltas.weight)
        for layer in (head.conv[0][0], head.cls_logits, head.bbox_pred):
            layer.bias.normal_(std=0.5)
        ours.rpn_head.conv.bias.copy_(head.conv[0][0].bias)
        ours.rpn_head.objectness_logits.bias.copy_(head.cls_logits.bias)
        ours.rpn_head.anchor_deltas.bias.copy_(head.bbox_pred.bias)
    reference = RegionProposalNetwork(TVAnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2), head, 0.7, 0.3,
                                      batch_size_per_image, 0.5, dict(training=100, testing=50),
                                      dict(training=60, testing=30), 0.7)
    features = {"p2": torch.randn(2, 8, 16, 20) * 3, "p3": torch.randn(2, 8, 8, 10) * 3}
    image_sizes = [(64, 80), (50, 70)]
    return ours, reference, features, image_sizes


def test_proposals_match_torchvision():
    ours, reference, features, image_sizes = _torchvision_pair()
    ours.eval(), reference.eval()
    with torch.no_grad():
        proposals, _ = ours(features, (64, 80), torch.tensor(image_sizes))
        expected, _ = reference(ImageList(torch.zeros(2, 3, 64, 80), image_sizes), OrderedDict(features))
    for index, boxes in enumerate(expected):
        assert 0 < len(boxes) <= 30
        assert torch.allclose(proposals.boxes[proposals.image_index == index], boxes, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_torchvision_when_every_anchor_is_sampled(seed):
    ours, reference, features, image_sizes = _torchvision_pair(batch_size_per_image=10**6)
    gt = [torch.tensor([[5.0, 6.0, 30.0, 40.0], [40.0, 10.0, 70.0, 30.0]]), torch.tensor([[10.0, 10.0, 26.0, 20.0]])]
    torch.manual_seed(seed)
    ours.train(), reference.train()
    _, losses = ours(features, (64, 80), torch.tensor(image_sizes), gt)
    _, expected = reference(ImageList(torch.zeros(2, 3, 64, 80), image_sizes), OrderedDict(features),
                            [{"boxes": b} for b in gt])
    assert torch.allclose(losses["loss_rpn_cls"], expected["loss_objectness"], rtol=1e-5)
    assert torch.allclose(losses["loss_rpn_loc"], expected["loss_rpn_box_reg"], rtol=1e-5)
