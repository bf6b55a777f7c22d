"""FasterRCNN end to end on tiny inputs: C4 and FPN training steps, eval outputs, resizing, configs."""
import glob
import os

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

import resdet
from resdet.data.datasets import TOY_CLASSES

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")


def _cfg(base: str, **overrides):
    cfg = resdet.get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, base))
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "BN"  # random weights: BN keeps activations in range
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 32
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 1000
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


def _build(cfg):
    torch.manual_seed(0)
    return resdet.build_model(cfg)


def _train_batch():
    return [{"image": torch.rand(3, 64, 96) * 255, "height": 128, "width": 192,
             "boxes": torch.tensor([[10.0, 8.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]]),
             "labels": torch.tensor([1, 3])},
            {"image": torch.rand(3, 60, 80) * 255, "height": 60, "width": 80,
             "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


@pytest.mark.parametrize("base", ["Base-RCNN-C4.yaml", "Base-RCNN-FPN.yaml"])
def test_training_step_and_eval(base):
    model = _build(_cfg(base, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}))
    model.train()
    losses = model(_train_batch())
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("proposal_generator.rpn_head.objectness_logits.weight", "roi_heads.box_predictor.cls_score.weight",
                 "roi_heads.box_predictor.bbox_pred.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 64, 96) * 255, "height": 100, "width": 150},
                         {"image": torch.rand(3, 50, 50) * 255}])
    assert len(outputs) == 2
    for output, (height, width) in zip(outputs, [(100, 150), (50, 50)]):
        assert set(output) == {"boxes", "scores", "labels"} and len(output["boxes"]) > 0
        boxes = output["boxes"]
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        assert ((output["labels"] >= 0) & (output["labels"] < 4)).all()


def test_eval_resizes_and_maps_boxes_back():
    model = _build(_cfg("Base-RCNN-C4.yaml", **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})).eval()
    seen = {}
    model.backbone.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0].shape))
    model.roi_heads.register_forward_hook(lambda module, inputs, output: seen.update(detections=output[0]))
    with torch.no_grad():
        (output,) = model([{"image": torch.rand(3, 100, 150) * 255, "height": 100, "width": 150}])
    assert seen["input"] == (1, 3, 64, 96)  # shorter side 100 -> 64: scale 0.64
    resized = seen["detections"][0]["boxes"]
    assert len(resized) > 0 and torch.allclose(output["boxes"], resized * 1.5625)
    assert output["boxes"][:, 2].max() <= 150 and output["boxes"][:, 3].max() <= 100


def test_preprocess_matches_torchvision_transform():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    cfg = _cfg("Base-RCNN-FPN.yaml", **{"MODEL.PIXEL_MEAN": [255 * m for m in mean],
                                        "MODEL.PIXEL_STD": [255 * s for s in std], "INPUT.MAX_SIZE_TEST": 100})
    model = _build(cfg).eval()
    images = [torch.rand(3, 90, 130), torch.rand(3, 120, 70)]
    tensor, sizes = model.preprocess([{"image": image * 255} for image in images])
    expected = GeneralizedRCNNTransform(64, 100, mean, std).eval()(images)[0]
    assert sizes.tolist() == [list(s) for s in expected.image_sizes]
    assert tensor.shape == expected.tensors.shape and tensor.shape[-1] % 32 == 0
    assert torch.allclose(tensor, expected.tensors, atol=1e-4)


def test_fpn_backbone_and_names():
    model = _build(_cfg("toy_frcnn_r18_fpn.yaml"))
    backbone = model.backbone
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "p2": (64, 4), "p3": (64, 8), "p4": (64, 16), "p5": (64, 32), "p6": (64, 64)}
    assert backbone.size_divisibility == 32
    features = backbone(torch.randn(1, 3, 64, 96))
    assert torch.equal(features["p6"], features["p5"][..., ::2, ::2])  # max pool, kernel 1, stride 2
    names = dict(model.named_parameters())
    for name in ("backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.res5.1.conv2.weight",
                 "backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.3.0.weight",
                 "proposal_generator.rpn_head.conv.weight", "proposal_generator.rpn_head.anchor_deltas.weight",
                 "roi_heads.box_head.fc1.weight", "roi_heads.box_head.fc2.weight"):
        assert name in names, name
    assert names["roi_heads.box_predictor.cls_score.weight"].shape == (5, 256)  # 4 classes + background
    assert names["roi_heads.box_predictor.bbox_pred.weight"].shape == (16, 256)


def test_freeze_at_two_with_frozen_bn():
    model = _build(_cfg("Base-RCNN-FPN.yaml", **{"MODEL.RESNETS.NORM": "FrozenBN"}))
    trunk = model.backbone.bottom_up
    assert not any(p.requires_grad for p in trunk.stem.parameters())
    assert not any(p.requires_grad for p in trunk.res2.parameters())
    assert all(p.requires_grad for p in trunk.res3.parameters())
    assert type(trunk.res3[0].norm1).__name__ == "FrozenBatchNorm2d"


def test_training_needs_boxes():
    model = _build(_cfg("Base-RCNN-C4.yaml")).train()
    with pytest.raises(KeyError, match="boxes"):
        model([{"image": torch.rand(3, 64, 64) * 255, "height": 64, "width": 64}])


def test_detection_configs():
    files = sorted(glob.glob(os.path.join(CONFIGS, "*RCNN*.yaml")) + glob.glob(os.path.join(CONFIGS, "*frcnn*.yaml")))
    assert len(files) == 9
    loaded = {}
    for path in files:
        cfg = resdet.get_cfg()
        cfg.merge_from_file(path)
        loaded[os.path.basename(path)] = cfg
    paper = loaded["coco_frcnn_r101.yaml"]
    assert paper.MODEL.RESNETS.DEPTH == 101 and paper.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"
    assert paper.MODEL.RPN.POST_NMS_TOPK_TEST == 300 and paper.INPUT.MIN_SIZE_TEST == 600
    assert tuple(paper.SOLVER.STEPS) == (240000,) and paper.SOLVER.MAX_ITER == 320000
    assert loaded["voc_frcnn_r101.yaml"].MODEL.ROI_HEADS.NUM_CLASSES == 20
    assert loaded["toy_frcnn_r18_fpn.yaml"].MODEL.ROI_HEADS.NUM_CLASSES == len(TOY_CLASSES)
    scratch = loaded["toy_frcnn_r18_fpn_scratch.yaml"]  # the from-scratch twin: same detector, no pretrained trunk
    assert scratch.MODEL.BACKBONE.WEIGHTS == "" and scratch.MODEL.RESNETS.NORM == "BN"
    assert scratch.SOLVER.MAX_ITER == loaded["toy_frcnn_r18_fpn.yaml"].SOLVER.MAX_ITER
    assert loaded["coco_frcnn_r50_fpn.yaml"].MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"
