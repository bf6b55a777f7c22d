"""weight_cache: layers' weights cast once under autocast, equal to autocast's own casts, refreshed on change."""
import torch
from torch import nn

import resdet
from resdet.layers import weight_cache
from resdet.layers.weight_cache import conv2d, layer_weights, linear

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_cast_once_equal_to_autocast_and_refreshed_after_an_update():
    torch.manual_seed(0)
    fc, x = nn.Linear(8, 4), torch.randn(3, 8)
    with torch.no_grad(), torch.autocast(**BF16):
        expected = fc(x)
        weight, bias = layer_weights(fc)
        assert weight.dtype == bias.dtype == torch.bfloat16
        assert layer_weights(fc)[0] is weight  # cached: no second cast
        torch.testing.assert_close(linear(fc, x), expected, rtol=0, atol=0)
        fc.weight.mul_(-1.0)  # an optimizer step, in place
        assert layer_weights(fc)[0] is not weight
        # (autocast's own cast of fc.weight, cached until the autocast region ends, would still be the old one)
        by_hand = torch.nn.functional.linear(x.bfloat16(), fc.weight.bfloat16(), fc.bias.bfloat16())
        torch.testing.assert_close(linear(fc, x), by_hand, rtol=0, atol=0)
    with torch.inference_mode(), torch.autocast(**BF16):  # another context: cast again, for inference mode
        torch.testing.assert_close(linear(fc, x), fc(x), rtol=0, atol=0)
    with torch.no_grad():  # autocast off: the parameters themselves
        assert layer_weights(fc)[0] is fc.weight


def test_no_cache_while_a_gradient_flows():
    torch.manual_seed(1)
    conv, x = nn.Conv2d(3, 5, 3, stride=2, padding=1), torch.randn(2, 3, 9, 9)
    with torch.autocast(**BF16):
        out = conv2d(conv, x)
        assert layer_weights(conv)[0] is conv.weight  # autocast casts it, and the gradient reaches it
        torch.testing.assert_close(out, conv(x), rtol=0, atol=0)
    out.float().sum().backward()
    assert conv.weight.grad is not None and conv.bias.grad is not None


def test_packed_conv_on_channels_last_inputs_equals_conv2d():
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
    for shape in ((1, 8, 20, 24), (2, 8, 9, 13)):  # packed once, for the first input's size, valid for any
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = conv(x)
            torch.testing.assert_close(conv2d(conv, x), expected, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(conv2d(conv, x, relu=True), expected.relu(), rtol=1e-6, atol=1e-6)
            with torch.autocast(**BF16):
                by_hand = torch.nn.functional.conv2d(x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16(),
                                                     stride=2, padding=1)
                out = conv2d(conv, x, relu=True)
            assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(out.float(), by_hand.relu().float(), rtol=1e-2, atol=1e-2)
    if weight_cache.PACKING:  # the packed path was the one taken
        assert "packed" in weight_cache._CACHE[conv] and weight_cache._CACHE[conv]["packed"].values[0].is_mkldnn


def test_a_mode_switch_picks_up_parameters_changed_behind_the_version_counters():
    cfg = resdet.get_cfg()
    cfg.merge_from_file("configs/toy_cls_r18.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    model = resdet.build_model(cfg).eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        first = model(images)  # caches the BN layers folded into their convs
        for param in model.parameters():
            param.data.mul_(0.9)  # `.data` leaves the version counters as they were
        model.eval()
        second = model(images)
    fresh = resdet.build_model(cfg).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = fresh(images)
    assert not torch.allclose(first, expected)
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
