"""load_weights against torchvision's ResNet and hand-built MSRA pickles; suffix matching into detectors."""
import pickle
import re
import runpy
from pathlib import Path
from typing import Tuple

import pytest
import torch
import torchvision
from torch import nn

import resdet
from resdet.checkpoint import WEIGHT_CONVERTERS, LoadReport
from resdet.config import setup_cfg
from resdet.modeling import build_backbone
from resdet.modeling.backbone.resnet import make_stage, resnet_stage_specs

ROOT = Path(__file__).resolve().parents[2]
TORCHVISION_PIXELS = ["INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]",
                      "MODEL.PIXEL_STD", "[58.395, 57.12, 57.375]", "MODEL.RESNETS.STRIDE_IN_1X1", "False"]


def config(name: str, *overrides):
    return setup_cfg(str(ROOT / "configs" / name), list(overrides))


def torchvision_resnet(depth: int) -> nn.Module:
    """A torchvision ResNet in eval mode with random BN statistics and affine parameters."""
    torch.manual_seed(depth)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model


def assert_same_logits(reference: nn.Module, cfg, path: Path) -> Tuple[nn.Module, LoadReport]:
    """Load `path` into cfg's model; its logits on 0-255 RGB pixels equal torchvision's on normalised ones."""
    model = resdet.build_model(cfg).eval()
    report = resdet.load_weights(model, str(path))
    pixels = torch.rand(2, 3, 64, 64) * 255  # (N, 3, H, W) RGB
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((pixels / 255 - mean) / std)
        logits = model(pixels)
    assert (logits - expected).abs().max() <= 1e-4 * expected.abs().max()
    return model, report


def test_torchvision_state_dict_gives_torchvision_logits(tmp_path):
    reference = torchvision_resnet(50)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    _, report = assert_same_logits(reference, config("r50_imagenet.yaml", *TORCHVISION_PIXELS),
                                   tmp_path / "resnet50.pth")
    assert report.format == "torchvision"
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])


def msra_name(torchvision_key: str) -> str:
    """Detectron's ImageNet blob name of a torchvision key, written out by hand."""
    layer, _, field = torchvision_key.rpartition(".")
    is_norm = "bn" in layer or "downsample.1" in layer
    bn_field = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}[field] if is_norm else None
    if layer == "conv1":
        return "conv1_w"
    if layer == "bn1":
        return f"res_conv1_bn_{bn_field}"
    if layer == "fc":
        return f"fc1000_{field[0]}"
    stage, block, rest = re.match(r"layer(\d)\.(\d+)\.(.+)", layer).groups()
    prefix = f"res{int(stage) + 1}_{block}_"
    branch = {"downsample.0": "branch1", "downsample.1": "branch1"}.get(rest) or "branch2" + "abc"[int(rest[-1]) - 1]
    return prefix + branch + (f"_bn_{bn_field}" if bn_field else "_w")


def msra_blobs(reference: nn.Module, with_statistics: bool) -> dict:
    """The reference's weights as MSRA numpy blobs; without statistics BN is folded into scale and shift."""
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    if not with_statistics:
        for key in [k for k in state if k.endswith("running_var")]:
            prefix = key[: -len("running_var")]
            scale = state[prefix + "weight"] / torch.sqrt(state[key] + 1e-5)
            state[prefix + "bias"] = state[prefix + "bias"] - state[prefix + "running_mean"] * scale
            state[prefix + "weight"] = scale
            del state[key], state[prefix + "running_mean"]
    return {msra_name(key): value.numpy() for key, value in state.items()}


# protocol 2 is what the Python 2 era files use; it is slow to write, so only the small model uses it
@pytest.mark.parametrize("depth,with_statistics,wrap,protocol", [(50, False, True, 4), (18, True, False, 2)])
def test_msra_pickle_loads_completely_and_gives_torchvision_logits(tmp_path, depth, with_statistics, wrap, protocol):
    reference = torchvision_resnet(depth)
    blobs = msra_blobs(reference, with_statistics)
    path = tmp_path / f"R-{depth}.pkl"
    with open(path, "wb") as file:
        pickle.dump({"blobs": blobs} if wrap else blobs, file, protocol=protocol)
    model, report = assert_same_logits(reference, config(f"r{depth}_imagenet.yaml", *TORCHVISION_PIXELS), path)
    assert report.format == "msra" and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    block = model.backbone.res3[0]
    assert torch.equal(block.shortcut.conv.weight, torch.from_numpy(blobs["res3_0_branch1_w"]))
    assert torch.equal(block.conv2.weight, torch.from_numpy(blobs["res3_0_branch2b_w"]))
    assert torch.equal(model.backbone.stem.norm1.weight, torch.from_numpy(blobs["res_conv1_bn_s"]))
    assert torch.equal(model.fc.bias, torch.from_numpy(blobs["fc1000_b"]))
    if not with_statistics:  # scale/shift only: the norm must be exactly x * s + b
        norm = model.backbone.stem.norm1
        x = torch.randn(1, 64, 2, 2)
        expected = x * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        assert torch.allclose(norm(x), expected, atol=1e-6)


def test_resdet_checkpoint_round_trip(tmp_path):
    source = resdet.build_model(config("cifar/resnet20.yaml"))
    torch.save({"model": source.state_dict(), "iteration": 7}, tmp_path / "wrapped.pth")
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    for name in ("wrapped.pth", "bare.pth"):
        target = resdet.build_model(config("cifar/resnet20.yaml"))
        report = resdet.load_weights(target, str(tmp_path / name))
        assert report.format == "resdet" and (report.missing, report.unexpected, report.mismatched) == ([], [], [])
        assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())


class FakeDetector(nn.Module):
    """The parameter layout of the FPN and C4 detectors (DEVELOPERS.md), with stand-in heads."""

    def __init__(self, cfg, c4: bool):
        super().__init__()
        self.backbone, self.roi_heads = nn.Module(), nn.Module()
        if c4:
            cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
            self.backbone = build_backbone(cfg)
            self.roi_heads.res5 = make_stage(**resnet_stage_specs(cfg, 64, 4)[3])
        else:
            cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
            self.backbone.bottom_up = build_backbone(cfg)
            self.backbone.fpn = nn.Conv2d(512, 256, 1)
        self.roi_heads.box_predictor = nn.Linear(512, 4)


@pytest.mark.parametrize("c4", [False, True])
def test_classification_checkpoint_fills_detector_trunk(tmp_path, c4):
    classifier = resdet.build_model(config("r18_imagenet.yaml"))
    torch.save({"model": classifier.state_dict()}, tmp_path / "r18.pth")
    cfg = config("r18_imagenet.yaml")
    cfg.defrost()
    detector = FakeDetector(cfg, c4)
    report = resdet.load_weights(detector, str(tmp_path / "r18.pth"))
    heads = ["roi_heads.box_predictor.weight", "roi_heads.box_predictor.bias"]
    assert sorted(report.missing) == sorted(heads if c4 else heads + ["backbone.fpn.weight", "backbone.fpn.bias"])
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"] and not report.mismatched
    res5 = detector.roi_heads.res5 if c4 else detector.backbone.bottom_up.res5
    assert torch.equal(res5[1].conv2.weight, classifier.backbone.res5[1].conv2.weight)
    assert "left out" in report.summary() and "box_predictor" in report.summary()


def test_shape_mismatch_is_reported_and_not_loaded(tmp_path):
    torch.save({"model": resdet.build_model(config("r18_imagenet.yaml")).state_dict()}, tmp_path / "r18.pth")
    target = resdet.build_model(config("r18_imagenet.yaml", "MODEL.CLASSIFIER.NUM_CLASSES", "10"))
    fc_before = target.fc.weight.clone()
    report = resdet.load_weights(target, str(tmp_path / "r18.pth"))
    assert sorted(report.mismatched) == [("fc.bias", (1000,), (10,)), ("fc.weight", (1000, 512), (10, 512))]
    assert torch.equal(target.fc.weight, fc_before) and not report.missing and not report.unexpected
    assert "shape mismatch" in report.summary()


def test_convert_weights_tool_writes_a_resdet_checkpoint(tmp_path, capsys):
    main = runpy.run_path(str(ROOT / "tools" / "convert_weights.py"))["main"]
    reference = torchvision_resnet(18)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    main(["--from", "torchvision", "--config", str(ROOT / "configs" / "r18_imagenet.yaml"),
          str(tmp_path / "tv.pth"), str(tmp_path / "out.pth")])
    checkpoint = torch.load(tmp_path / "out.pth", weights_only=True)
    assert torch.equal(checkpoint["model"]["backbone.res5.1.norm2.running_var"], reference.layer4[1].bn2.running_var)
    # ResNet-18 by hand: 20 convs, fc weight and bias, 20 BNs with 5 tensors each
    assert "loaded 122 tensors" in capsys.readouterr().out
    unregistered = [f for f in ("detectron2", "torchvision-frcnn") if f not in WEIGHT_CONVERTERS]
    for name in unregistered:
        with pytest.raises(SystemExit, match=f"--from {name}"):
            main(["--from", name, str(tmp_path / "tv.pth"), str(tmp_path / "x.pth")])
