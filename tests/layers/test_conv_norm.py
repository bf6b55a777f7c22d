"""conv_norm: a FrozenBatchNorm2d or eval-mode BatchNorm2d folded into its conv equals the conv, then the norm."""
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from resdet.layers.conv_norm import conv_norm


def _layers(seed: int = 0, bias: bool = False):
    torch.manual_seed(seed)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias)
    norm = FrozenBatchNorm2d(6)
    norm.weight.uniform_(0.5, 2.0)
    norm.bias.uniform_(-1.0, 1.0)
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    return conv, norm


def test_fold_matches_conv_then_frozen_norm_and_its_gradient():
    conv, norm = _layers(bias=True)
    x = torch.randn(2, 4, 9, 9)
    expected = norm(conv(x))
    expected.square().sum().backward()
    expected_grad = conv.weight.grad.clone()
    conv.weight.grad = None
    out = conv_norm(conv, norm, x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, expected_grad, rtol=1e-4, atol=1e-4)


def test_cached_fold_follows_in_place_updates_and_replaced_tensors():
    conv, norm = _layers()
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        conv_norm(conv, norm, x)  # fills the cache
    with torch.no_grad():
        conv.weight.mul_(-2.0)  # an optimizer step
        norm.running_var.fill_(3.0)  # a checkpoint load
    with torch.inference_mode():
        torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)), rtol=1e-5, atol=1e-5)
    conv.weight = nn.Parameter(torch.randn_like(conv.weight))  # a replaced tensor
    with torch.no_grad():
        torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)), rtol=1e-5, atol=1e-5)
    # a fold cached under no_grad is no inference tensor, so it can take part in training afterwards
    conv.weight.requires_grad_(False)
    y = conv_norm(conv, norm, x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None


def test_autocast_runs_in_bfloat16_close_to_fp32():
    conv, norm = _layers()
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        expected = norm(conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv_norm(conv, norm, x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
        torch.testing.assert_close(conv_norm(conv, norm, x), expected, rtol=1e-5, atol=1e-5)  # fp32 again


def test_a_hooked_conv_or_a_global_hook_still_sees_the_modules_run():
    conv, norm = _layers()
    seen = []
    conv.register_forward_hook(lambda module, inputs, output: seen.append(module))
    conv_norm(conv, norm, torch.randn(1, 4, 8, 8))
    assert seen == [conv]
    other_conv, other_norm = _layers(seed=1)
    everything = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: everything.append(m))
    try:
        conv_norm(other_conv, other_norm, torch.randn(1, 4, 8, 8))
    finally:
        handle.remove()
    assert everything == [other_conv, other_norm]


def test_a_hooked_norm_still_runs():
    conv, norm = _layers()
    seen = []
    norm.register_forward_hook(lambda module, inputs, output: seen.append(output))
    out = conv_norm(conv, norm, torch.randn(1, 4, 8, 8))
    assert len(seen) == 1 and seen[0] is out


def test_a_trainable_batchnorm_is_left_alone():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(3, 5, 1, bias=False), nn.BatchNorm2d(5)
    x = torch.randn(4, 3, 6, 6)
    torch.testing.assert_close(conv_norm(conv, norm, x), nn.functional.batch_norm(
        conv(x), None, None, norm.weight, norm.bias, training=True), rtol=1e-5, atol=1e-5)
    assert norm.num_batches_tracked.item() == 1


def _eval_batchnorm(affine: bool = True, sync: bool = False) -> nn.Module:
    norm = (nn.SyncBatchNorm if sync else nn.BatchNorm2d)(6, affine=affine).eval()
    with torch.no_grad():
        if affine:
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return norm


def test_an_eval_mode_batchnorm_is_folded_equal_to_torch_and_its_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    for norm in (_eval_batchnorm(), _eval_batchnorm(affine=False), _eval_batchnorm(sync=True)):
        expected = nn.functional.batch_norm(conv(x), norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                            training=False, eps=norm.eps)
        grads = torch.autograd.grad(expected.square().sum(), [x, conv.weight])
        calls = []  # calls of the norm's forward, spied on without a hook (a hook stops the fold)
        norm.forward = lambda *args, norm=norm, calls=calls: calls.append(norm) or type(norm).forward(norm, *args)
        out = conv_norm(conv, norm, x)
        del norm.forward
        assert not calls, "the norm ran as its own module instead of folded"
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        for got, want in zip(torch.autograd.grad(out.square().sum(), [x, conv.weight]), grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        with torch.inference_mode():  # cached fold
            torch.testing.assert_close(conv_norm(conv, norm, x.detach()), expected.detach(), rtol=1e-5, atol=1e-5)
