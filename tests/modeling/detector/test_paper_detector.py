"""The paper's detector config end to end, and a classification checkpoint filling a real detector."""
import runpy
from pathlib import Path

import torch
import torchvision

import resdet
from resdet.config import setup_cfg

ROOT = Path(__file__).resolve().parents[3]
analyze = runpy.run_path(str(ROOT / "tools" / "analyze_model.py"))["analyze"]
# Fewer RoIs than the recipe keeps the CPU test short; the architecture is the config's own.
FEWER_ROIS = ["MODEL.DEVICE", "cpu", "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 16,
              "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16]


def test_paper_r101_c4_flops_train_step_and_detections():
    cfg = setup_cfg(str(ROOT / "configs" / "coco_frcnn_r101.yaml"), FEWER_ROIS)
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"
    report = analyze(cfg)
    trunk = sum(p.numel() for name, p in torchvision.models.resnet101().named_parameters() if not name.startswith("fc"))
    assert report["params"] > trunk  # the whole ResNet-101 trunk (res5 as the RoI head) plus RPN and predictors
    # conv1..res4 on a 600x800 image alone cost about (600*800)/(224*224) x ResNet-101's res1-4 share
    assert report["gflops"] > 50

    model = resdet.build_model(cfg).train()
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 600, 800, generator=generator) * 255
    boxes = torch.tensor([[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0]])
    losses = model([{"image": image, "height": 600, "width": 800, "boxes": boxes, "labels": torch.tensor([3, 17])}])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.proposal_generator.rpn_head.conv.weight.grad is not None

    model.eval()
    with torch.inference_mode():
        detections = model([{"image": image, "height": 600, "width": 800}])[0]
    assert set(detections) == {"boxes", "scores", "labels"}
    assert detections["boxes"].shape[1] == 4 and len(detections["boxes"]) == len(detections["scores"])
    if len(detections["boxes"]):
        assert detections["boxes"][:, 2].max() <= 800 and detections["boxes"][:, 3].max() <= 600
        assert detections["labels"].max() < 80


def test_classification_checkpoint_fills_toy_detector(tmp_path):
    classifier = resdet.build_model(setup_cfg(str(ROOT / "configs" / "r18_imagenet.yaml"), ["MODEL.DEVICE", "cpu"]))
    state = classifier.state_dict()
    torch.save({"model": state}, tmp_path / "r18_cls.pth")
    detector = resdet.build_model(setup_cfg(str(ROOT / "configs" / "toy_frcnn_r18_fpn.yaml"), ["MODEL.DEVICE", "cpu"]))
    report = resdet.load_weights(detector, str(tmp_path / "r18_cls.pth"))
    loaded = detector.state_dict()
    trunk_keys = [k for k in state if k.startswith("backbone.")]
    assert any(k.startswith("backbone.stem.") for k in trunk_keys) and len(trunk_keys) > 100
    for key in trunk_keys:
        target = "backbone.bottom_up." + key[len("backbone."):]
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(loaded[target], state[key]), key
    assert any(k.startswith("roi_heads.box_predictor") for k in report.missing)  # heads are reported as left out
