"""Exported models against the eager ones: the ONNX file in onnxruntime and the torch.export program reproduce >= 99%
of the eager model's top-100 detections (same label, IoU >= 0.99, score within 1e-3) for the toy detector (through
tools/export_model.py and a checkpoint with meta) and an R50-C4, both with calibrated random weights, on
toy validation images and a photo-like image of random size; a classifier's logits agree to 1e-4. The README's
onnxruntime example runs as written."""
import json
import os
import re
import runpy
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torchvision.ops import box_iou

import resdet
from resdet.checkpoint.checkpointer import Checkpointer
from resdet.checkpoint.meta import model_meta
from resdet.config import setup_cfg
from resdet.deploy.export import example_input, export_program, write_program
from resdet.modeling.detector.rcnn import resize_for_test

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "configs" / "toy_frcnn_r18_fpn.yaml")
CPU = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
# R50s at a small test size; the C4 head runs res5 once per proposal, so it gets few of them
# The bottleneck trunk with the C4 head; the FPN graph is the toy detector's (an R50-FPN export took 40 s more).
R50 = {"c4": ("coco_frcnn_r50_c4.yaml", ["MODEL.RPN.POST_NMS_TOPK_TEST", "64"])}
SMALL = ["INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256"]
TOP = 100
MIN_MATCHED = 0.99
benchmark = runpy.run_path(str(ROOT / "tools" / "benchmark.py"))
export_tool = runpy.run_path(str(ROOT / "tools" / "export_model.py"))


def photo_like(seed: int) -> np.ndarray:
    """A BGR uint8 image of random size (90-300 px a side) of smoothed noise, whose features vary like a photo's."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(90, 300, 2))
    noise = rng.random((height, width, 3), dtype=np.float32)
    smooth = cv2.blur(noise, (9, 9))
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255).astype(np.uint8)


def sample_images(toy_datasets, count: int):
    """`count` toy validation scenes and one photo-like image, BGR uint8."""
    folder = toy_datasets / "toy" / "coco" / "val"
    return [cv2.imread(str(folder / name)) for name in sorted(os.listdir(folder))[:count]] + [photo_like(count)]


def spread_heads(model, run) -> None:
    """Redraw the heads' last layers so that on run()'s images their outputs spread with a set std (a random head
    scores every box alike, so that rounding would reorder them), scaled to the inputs each layer sees."""
    rpn, predictor = model.proposal_generator.rpn_head, model.roi_heads.box_predictor
    target_std = {rpn.objectness_logits: 2.0, rpn.anchor_deltas: 0.2, predictor.cls_score: 2.0,
                  predictor.bbox_pred: 0.2}
    squares = {layer: [] for layer in target_std}
    handles = [layer.register_forward_pre_hook(lambda m, inputs: squares[m].append(inputs[0].pow(2).mean()))
               for layer in target_std]
    with torch.no_grad():
        run()
        for handle in handles:
            handle.remove()
        generator = torch.Generator().manual_seed(1)
        for layer, std in target_std.items():
            input_rms = float(torch.stack(squares[layer]).mean().sqrt())
            scale = std / (input_rms * layer.weight[0].numel() ** 0.5)
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * scale)
            layer.bias.zero_()


def random_detector(cfg, images) -> torch.nn.Module:
    """The config's detector with random weights made to behave like a trained one on `images` (BGR uint8):
    FrozenBN statistics calibrated on them (so every layer sees normalised inputs) and spread heads."""
    torch.manual_seed(0)
    model = resdet.build_model(cfg).eval()
    batch = [{"image": torch.from_numpy(image).permute(2, 0, 1).float()} for image in images]
    benchmark["calibrate_frozen_norms"](model, lambda: model(batch))
    spread_heads(model, lambda: model(batch))
    return model


def eager_detections(model, image_bgr: np.ndarray) -> dict:
    """The eager model on the original image (it resizes internally); boxes in its pixels."""
    with torch.no_grad():
        return model([{"image": torch.from_numpy(image_bgr).permute(2, 0, 1).float()}])[0]


def exported_detections(run, image_bgr: np.ndarray, cfg) -> dict:
    """An exported graph on the image resized as model.json says; boxes mapped back to the original's pixels."""
    resized = resize_for_test(torch.from_numpy(image_bgr).permute(2, 0, 1).float(), cfg.INPUT.MIN_SIZE_TEST,
                              cfg.INPUT.MAX_SIZE_TEST)
    boxes, scores, labels = (torch.as_tensor(x) for x in run(resized[None]))
    height, width = image_bgr.shape[:2]
    ratio = torch.tensor([width / resized.shape[2], height / resized.shape[1]] * 2)
    return {"boxes": boxes * ratio, "scores": scores, "labels": labels}


def matched(expected: dict, actual: dict) -> tuple:
    """(matched, compared): of the expected top-100, those with an actual detection of the same label, IoU >= 0.99
    and a score within 1e-3."""
    boxes, scores, labels = (torch.as_tensor(expected[k])[:TOP] for k in ("boxes", "scores", "labels"))
    iou = box_iou(boxes, torch.as_tensor(actual["boxes"]))
    same = (labels[:, None] == torch.as_tensor(actual["labels"])[None]) & (iou >= 0.99)
    close = (scores[:, None] - torch.as_tensor(actual["scores"])[None]).abs() <= 1e-3
    return int((same & close).any(dim=1).sum()), len(boxes)


def onnx_runner(path: str):
    """The ONNX file in an onnxruntime session on 2 threads, called like the torch graph."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(path, options)
    return lambda image: session.run(None, {"image": image.numpy()})


def program_runner(program):
    """An ExportedProgram's module without gradients, its outputs as a tuple like onnxruntime's list."""
    module = program.module()

    def run(image):
        with torch.no_grad():
            outputs = module(image)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    return run


def assert_reproduced(eager, exported: dict) -> None:
    """Every runner in `exported` matches >= 99% of the eager top-100 detections over all images."""
    for name, outputs in exported.items():
        counts = [matched(e, o) for e, o in zip(eager, outputs)]
        hits, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        assert min(c[1] for c in counts) >= 50, f"too few detections to compare: {counts}"
        assert hits / total >= MIN_MATCHED, f"{name}: {hits}/{total} eager detections reproduced ({counts})"


@pytest.fixture(scope="module")
def toy_export(toy_datasets, tmp_path_factory):
    """A toy detector checkpoint as train_det.py writes it (with meta) and its exports by tools/export_model.py."""
    root = tmp_path_factory.mktemp("toy_export")
    cfg = setup_cfg(TOY, CPU)
    Checkpointer(random_detector(cfg, sample_images(toy_datasets, 2)), str(root), meta=model_meta(cfg)).save(
        "model_final")
    weights = str(root / "model_final.pth")
    for fmt in ("onnx", "torch_export"):
        args = ["--config", TOY, "--format", fmt, "--output", str(root / fmt), *CPU, "MODEL.WEIGHTS", weights]
        assert export_tool["main"](args) == 0
    return cfg, weights, root


def test_toy_detector_exports_reproduce_eager(toy_export, toy_datasets):
    cfg, weights, root = toy_export
    predictor = resdet.Predictor(cfg, weights=weights)
    images = sample_images(toy_datasets, 2)
    program = torch.export.load(str(root / "torch_export" / "model.pt2"))
    runners = {"onnx": onnx_runner(str(root / "onnx" / "model.onnx")), "torch_export": program_runner(program)}
    eager = [predictor(image) for image in images]
    assert_reproduced(eager, {name: [exported_detections(run, image, cfg) for image in images]
                              for name, run in runners.items()})


def test_toy_model_json_and_dynamic_input(toy_export):
    cfg, weights, root = toy_export
    info = json.loads((root / "onnx" / "model.json").read_text())
    meta = torch.load(weights, weights_only=True)["meta"]
    assert info["class_names"] == meta["class_names"] == ["circle", "cross", "square", "triangle"]
    assert info["format"] == "onnx" and info["file"] == "model.onnx" and info["resdet_version"] == resdet.__version__
    assert (info["input_format"], info["min_size_test"], info["max_size_test"]) == ("BGR", 160, 320)
    assert info["pixel_std"] == list(cfg.MODEL.PIXEL_STD) and info["outputs"] == ["boxes", "scores", "labels"]
    assert json.loads((root / "torch_export" / "model.json").read_text())["file"] == "model.pt2"
    graph = onnx.load(str(root / "onnx" / "model.onnx"), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1 and dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param


def readme_deploy_example() -> str:
    """The first ```python block of the README's Deploy section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Deploy"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_onnx_example_runs_as_written(toy_export, toy_datasets, tmp_path, monkeypatch):
    cfg, weights, root = toy_export
    photo = sample_images(toy_datasets, 1)[0]
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo)
    (tmp_path / "deploy").symlink_to(root / "onnx")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(readme_deploy_example(), namespace)
    assert cv2.imread("detections.png").shape == photo.shape
    expected = resdet.Predictor(cfg, weights=weights)(cv2.imread("photo.jpg"))
    hits, total = matched(expected, {k: namespace[k] for k in ("boxes", "scores", "labels")})
    assert hits / total >= MIN_MATCHED, f"{hits}/{total}"


@pytest.mark.parametrize("arch", sorted(R50))
def test_r50_exports_reproduce_eager(arch, toy_datasets, tmp_path):
    config, overrides = R50[arch]
    cfg = setup_cfg(str(ROOT / "configs" / config), [*CPU, *SMALL, *overrides])
    images = sample_images(toy_datasets, 1)
    model = random_detector(cfg, images)
    program = export_program(model, example_input(cfg, torch.device("cpu")))
    path = write_program(program, cfg, "onnx", str(tmp_path), [f"class_{i}" for i in range(80)])
    runners = {"onnx": onnx_runner(path), "torch_export": program_runner(program)}
    eager = [eager_detections(model, image) for image in images]
    assert_reproduced(eager, {name: [exported_detections(run, image, cfg) for image in images]
                              for name, run in runners.items()})


def test_classifier_logits_agree(tmp_path):
    cfg = setup_cfg(str(ROOT / "configs" / "toy_cls_r18.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = resdet.build_model(cfg).eval()
    with torch.no_grad():  # statistics and a head that give logits of a few units, not ~0
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        model.fc.weight.normal_(std=0.5)
    program = export_program(model, example_input(cfg, torch.device("cpu")))
    path = write_program(program, cfg, "onnx", str(tmp_path), [str(i) for i in range(10)])
    runners = {"onnx": onnx_runner(path), "torch_export": program_runner(program)}
    for shape in [(1, 3, 64, 64), (3, 3, 48, 80)]:
        images = torch.rand(shape, generator=torch.Generator().manual_seed(shape[0])) * 255
        with torch.no_grad():
            expected = model(images)
        assert expected.abs().max() > 1
        for name, run in runners.items():
            torch.testing.assert_close(torch.as_tensor(run(images)[0]), expected, rtol=0, atol=1e-4, msg=name)
