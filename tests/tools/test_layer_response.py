"""tools/layer_response.py: which layers it measures, and their std against a direct forward hook."""
import importlib.util
import json
import os

import pytest
import torch
from torch import nn

import resdet
from resdet.config import setup_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESNET20 = os.path.join(ROOT, "configs", "cifar", "resnet20.yaml")
PLAIN20 = os.path.join(ROOT, "configs", "cifar", "plain20.yaml")


def _load_tool():
    spec = importlib.util.spec_from_file_location("layer_response", os.path.join(ROOT, "tools", "layer_response.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _count_3x3_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())


def test_cli_resnet20_vs_plain20(tmp_path):
    tool = _load_tool()
    output = tmp_path / "fig7"
    assert tool.main(["--config", PLAIN20, "--config", RESNET20, "--random-inputs", "--num-images", "6",
                      "--batch-size", "4", "--output", str(output), "MODEL.DEVICE", "cpu"]) == 0
    results = json.loads((output / "layer_response.json").read_text())
    assert list(results) == ["plain20", "resnet20"]
    for result in results.values():
        # CIFAR nets with n = 3: the 3x3 stem conv plus 6n = 18 3x3 convs in the blocks
        assert len(result["std"]) == len(result["layers"]) == 6 * 3 + 1
        assert result["layers"][0] == "backbone.stem.norm1"
        assert all(value > 0 for value in result["std"])
    model = resdet.build_model(setup_cfg(RESNET20, ["MODEL.DEVICE", "cpu"]))
    assert len(results["resnet20"]["std"]) == _count_3x3_convs(model)
    assert (output / "layer_response.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_std_matches_a_direct_hook():
    tool = _load_tool()
    cfg = setup_cfg(RESNET20, ["MODEL.DEVICE", "cpu", "MODEL.CIFAR_RESNET.N", "1"])
    model = resdet.build_model(cfg).eval()
    # trained-looking BN statistics, so that eval-mode BN is not the identity
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    batches = list(tool.random_batches(cfg, num_images=5, batch_size=3, seed=0))
    assert [len(b) for b in batches] == [3, 2]
    expected = []
    # the direct reference: all outputs of one norm (before the in-place relu), then one torch.std
    handle = model.backbone.res3[0].norm2.register_forward_hook(lambda m, i, out: expected.append(out.clone()))
    # the tool's hooks keep every measured norm from being folded into its conv; hooks that do nothing keep them
    # unfolded here too, so that both runs round alike
    others = [norm.register_forward_hook(lambda *_: None) for _, norm in tool.response_layers(model)]
    with torch.no_grad():
        for images in batches:
            model(images)
    for hook in [handle, *others]:
        hook.remove()
    stds = tool.layer_responses(model, batches)
    assert len(stds) == 6 * 1 + 1
    assert stds["backbone.res3.0.norm2"] == pytest.approx(torch.cat(expected).double().std().item(), rel=1e-9)
    # the random inputs are standard normal once the model normalises them
    normalised = (torch.cat(batches) - model.pixel_mean) / model.pixel_std
    assert abs(normalised.mean().item()) < 0.05 and normalised.std().item() == pytest.approx(1.0, abs=0.05)


def test_imagenet_resnet_measures_only_3x3_layers(cfg):
    tool = _load_tool()
    cfg.MODEL.RESNETS.DEPTH = 50
    model = resdet.build_model(cfg)
    names = [name for name, _ in tool.response_layers(model)]
    # ResNet-50: one 3x3 conv per bottleneck (3 + 4 + 6 + 3 = 16); the 7x7 stem and 1x1 convs are left out
    assert len(names) == 16 == _count_3x3_convs(model)
    assert names[0] == "backbone.res2.0.norm2"
