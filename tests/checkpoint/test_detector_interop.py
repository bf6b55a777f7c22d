"""Detector weights from torchvision and detectron2: converted by resdet.load_weights, checked against the sources.

The torchvision test runs torchvision's own fasterrcnn_resnet50_fpn and resdet's converted copy on one image and
compares the detections; the detectron2 tests rename a resdet detector's weights to detectron2's names with a
mapping written here from detectron2's module layout, and check the round trip restores every tensor.
"""
import pickle
import re
import runpy
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops import box_iou

import resdet
from resdet.config import setup_cfg

ROOT = Path(__file__).resolve().parents[2]
TV_CONFIG = str(ROOT / "configs/torchvision/frcnn_r50_fpn.yaml")
D2_FPN_CONFIG = str(ROOT / "configs/detectron2/frcnn_r50_fpn.yaml")
D2_C4_CONFIG = str(ROOT / "configs/detectron2/frcnn_r50_c4.yaml")
HEIGHT, WIDTH = 480, 640
NUM_CLASSES = 80
PROPOSALS = 300  # fewer than torchvision's 1000 keeps the 80-class NMS at score threshold 0 quick


def smooth_image(seed: int) -> torch.Tensor:
    """(3, H, W) RGB 0-255: blurred noise, so that features vary smoothly like a photograph's."""
    noise = torch.rand(1, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))
    image = torch.nn.functional.avg_pool2d(noise, 9, 1, 4)[0]
    return (image - image.min()) / (image.max() - image.min()) * 255


def calibrate_norms(model: torch.nn.Module, image: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of its input on `image`, in one eval pass."""
    def set_statistics(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)) + 0.1)

    norms = [m for m in model.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_pre_hook(set_statistics) for m in norms]
    with torch.no_grad():
        model.backbone(model.transform([image])[0].tensors)
    for hook in hooks:
        hook.remove()


def spread_heads(model: torch.nn.Module) -> None:
    """Heads with larger weights than torchvision's init, so objectness and class scores are far apart."""
    generator = torch.Generator().manual_seed(2)
    layers = {model.rpn.head.conv[0][0]: 0.03, model.rpn.head.cls_logits: 0.15, model.rpn.head.bbox_pred: 0.02,
              model.roi_heads.box_predictor.cls_score: 0.2, model.roi_heads.box_predictor.bbox_pred: 0.1}
    with torch.no_grad():
        for layer, std in layers.items():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * std)


@pytest.fixture(scope="module")
def torchvision_detector(tmp_path_factory):
    """torchvision's R50-FPN with spread random weights (eval), its saved state dict and an image."""
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                    min_size=HEIGHT, max_size=WIDTH, box_score_thresh=0.0,
                                    rpn_post_nms_top_n_test=PROPOSALS).eval()
    spread_heads(model)
    image = smooth_image(seed=1)
    calibrate_norms(model, image / 255)
    path = tmp_path_factory.mktemp("tv") / "fasterrcnn_r50_fpn.pth"
    torch.save(model.state_dict(), path)
    return model, str(path), image


def torchvision_config(*overrides):
    return setup_cfg(TV_CONFIG, ["MODEL.ROI_HEADS.NUM_CLASSES", NUM_CLASSES, "INPUT.MIN_SIZE_TEST", HEIGHT,
                                 "INPUT.MAX_SIZE_TEST", WIDTH, *overrides])


def test_torchvision_frcnn_detections_match(torchvision_detector):
    reference, path, image = torchvision_detector
    model = resdet.build_model(torchvision_config("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                                                  "MODEL.RPN.POST_NMS_TOPK_TEST", PROPOSALS)).eval()
    report = resdet.load_weights(model, path)
    assert report.format == "torchvision-frcnn"
    assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
    with torch.no_grad():
        expected = reference([image / 255])[0]
        ours = model([{"image": image, "height": HEIGHT, "width": WIDTH}])[0]
    assert len(expected["boxes"]) == 100 and expected["scores"].std() > 0.01  # scores spread, not ties
    iou = box_iou(expected["boxes"], ours["boxes"])  # (100, N)
    same = (expected["labels"][:, None] - 1 == ours["labels"][None, :]) & (iou >= 0.99)
    close = (expected["scores"][:, None] - ours["scores"][None, :]).abs() <= 1e-3
    matched = (same & close).any(dim=1)
    assert matched.float().mean() >= 0.95, f"{int(matched.sum())}/100 torchvision detections matched"


def test_torchvision_frcnn_predictor_rows(torchvision_detector):
    """The class order of the predictor: torchvision's background row 0 goes last; its 4 box rows are dropped."""
    reference, path, _ = torchvision_detector
    model = resdet.build_model(torchvision_config())
    resdet.load_weights(model, path)
    source, ours = reference.roi_heads.box_predictor, model.roi_heads.box_predictor
    assert torch.equal(ours.cls_score.weight[-1], source.cls_score.weight[0])
    assert torch.equal(ours.cls_score.bias[:NUM_CLASSES], source.cls_score.bias[1:])
    assert torch.equal(ours.bbox_pred.weight, source.bbox_pred.weight[4:])
    assert torch.equal(model.proposal_generator.rpn_head.objectness_logits.weight, reference.rpn.head.cls_logits.weight)


def test_convert_tool_torchvision_frcnn(torchvision_detector, tmp_path, capsys):
    _, path, _ = torchvision_detector
    out = tmp_path / "converted.pth"
    convert_main = runpy.run_path(str(ROOT / "tools" / "convert_weights.py"))["main"]
    assert convert_main(["--from", "torchvision-frcnn", path, str(out)]) == 0
    state = torch.load(out, weights_only=True)["model"]
    assert "roi_heads.box_head.fc2.weight" in state and "backbone.bottom_up.res5.2.conv3.weight" in state
    model = resdet.build_model(torchvision_config())
    report = resdet.load_weights(model, str(out))
    assert report.format == "resdet" and not report.missing and not report.unexpected


# ---------------------------------------------------------------- detectron2
# detectron2's layout: a norm is the `norm` child of its conv, a projection is `shortcut` (a conv) with
# `shortcut.norm`, the FPN is `fpn_lateral{k}` / `fpn_output{k}`; the RPN anchors of a cell run sizes outer.
D2_C4_SIZES, D2_RATIOS = 5, 3


def to_detectron2_name(key: str) -> str:
    """A resdet detector key in detectron2's naming, written independently of the converter."""
    key = re.sub(r"\.norm(\d)\.", r".conv\1.norm.", key)  # res2.0.norm1.x, stem.norm1.x -> conv1.norm.x
    key = key.replace(".shortcut.conv.", ".shortcut.")
    fpn = re.match(r"backbone\.fpn\.(inner|layer)_blocks\.(\d)\.0\.(\w+)$", key)
    if fpn:
        kind = "lateral" if fpn.group(1) == "inner" else "output"
        key = f"backbone.fpn_{kind}{int(fpn.group(2)) + 2}.{fpn.group(3)}"
    return key


def to_detectron2_anchor_order(value: torch.Tensor, sizes: int, ratios: int) -> torch.Tensor:
    """RPN rows from (ratio outer, size inner) to detectron2's (size outer, ratio inner)."""
    rows_per_anchor = value.shape[0] // (sizes * ratios)
    grid = value.reshape(ratios, sizes, rows_per_anchor, *value.shape[1:])
    return grid.transpose(0, 1).reshape(value.shape)


def detectron2_state_dict(model: torch.nn.Module, sizes_per_level: int):
    state = {to_detectron2_name(k): v.clone() for k, v in model.state_dict().items()}
    for key in [k for k in state if re.search(r"rpn_head\.(objectness_logits|anchor_deltas)\.", k)]:
        state[key] = to_detectron2_anchor_order(state[key], sizes_per_level, D2_RATIOS)
    return state


def save_detectron2(state, path, as_pickle: bool) -> None:
    if as_pickle:
        with open(path, "wb") as file:  # detectron2's model-zoo layout: numpy arrays under "model"
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, file)
    else:
        torch.save({"model": state, "iteration": 10}, path)


@pytest.mark.parametrize("config, sizes_per_level, suffix", [
    (D2_FPN_CONFIG, 1, ".pkl"),
    (D2_FPN_CONFIG, 1, ".pth"),
    (D2_C4_CONFIG, D2_C4_SIZES, ".pkl"),
])
def test_detectron2_round_trip(config, sizes_per_level, suffix, tmp_path):
    cfg = setup_cfg(config, [])
    torch.manual_seed(0)
    source = resdet.build_model(cfg)
    with torch.no_grad():  # distinct norm statistics, so a misplaced one is noticed
        for name, buffer in source.named_buffers():
            if name.endswith("running_var") or name.endswith("running_mean"):
                buffer.uniform_(0.5, 1.5)
    d2_state = detectron2_state_dict(source, sizes_per_level)
    assert "backbone.bottom_up.stem.conv1.norm.running_var" in d2_state or "backbone.stem.conv1.norm.bias" in d2_state
    path = tmp_path / f"model_final{suffix}"
    save_detectron2(d2_state, path, as_pickle=suffix == ".pkl")
    torch.manual_seed(1)
    target = resdet.build_model(cfg)
    report = resdet.load_weights(target, str(path))
    assert report.format == "detectron2"
    assert not report.missing and not report.unexpected and not report.mismatched, report.summary()
    expected = source.state_dict()
    for key, value in target.state_dict().items():
        assert torch.equal(value, expected[key]), key
    if suffix == ".pkl":  # the command-line converter gives the same tensors
        convert_main = runpy.run_path(str(ROOT / "tools" / "convert_weights.py"))["main"]
        assert convert_main(["--from", "detectron2", str(path), str(tmp_path / "converted.pth")]) == 0
        converted = torch.load(tmp_path / "converted.pth", weights_only=True)["model"]
        assert all(torch.equal(converted[key], expected[key]) for key in converted)


def test_detectron2_c4_anchor_channels():
    """Channel a of resdet's C4 RPN scores anchor a of its cell anchors; detectron2's anchor a' = size * 3 + ratio."""
    from resdet.checkpoint.converters.detectron2 import anchors_to_resdet_order

    cfg = setup_cfg(D2_C4_CONFIG, [])
    generator = resdet.build_model(cfg).proposal_generator.anchor_generator
    ours = generator.cell_anchors_0  # (15, 4)
    sizes, ratios = cfg.MODEL.ANCHOR_GENERATOR.SIZES[0], cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0]
    detectron2 = []
    for size in sizes:  # detectron2's DefaultAnchorGenerator.generate_cell_anchors
        for ratio in ratios:
            w = (size * size / ratio) ** 0.5
            h = ratio * w
            detectron2.append([-w / 2, -h / 2, w / 2, h / 2])
    converted = anchors_to_resdet_order(torch.tensor(detectron2), len(detectron2))
    torch.testing.assert_close(converted, ours)


def test_formats_are_told_apart(torchvision_detector, tmp_path):
    from resdet.checkpoint.converters import detect_converter

    _, path, _ = torchvision_detector
    tv_state = torch.load(path, weights_only=True)
    model = resdet.build_model(torchvision_config())
    resdet_state = model.state_dict()
    tv_resnet = torchvision.models.resnet18().state_dict()
    assert detect_converter(tv_state, "tv").name == "torchvision-frcnn"
    assert detect_converter({"model": tv_state}, "tv").name == "torchvision-frcnn"
    assert detect_converter(resdet_state, "resdet").name == "resdet"
    assert detect_converter({"model": resdet_state}, "resdet").name == "resdet"
    assert detect_converter(tv_resnet, "resnet").name == "torchvision"
    assert detect_converter({"model": detectron2_state_dict(model, 1)}, "d2").name == "detectron2"
