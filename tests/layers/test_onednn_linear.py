"""onednn_linear.linear against F.linear computed in float64: outputs and every gradient."""
import pytest
import torch
import torch.nn.functional as F

from resdet.layers import onednn_linear
from resdet.layers.onednn_linear import linear

pytestmark = pytest.mark.skipif(not onednn_linear.ENABLED, reason="this torch build has no oneDNN inner product")


def _reference(x, weight, bias, relu):
    out = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    return out.relu() if relu else out


@pytest.mark.parametrize("shape", [(37, 300), (2, 5, 64), (1, 7)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_forward_and_gradients_equal_float64_reference(shape, with_bias, relu):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(19, shape[-1], requires_grad=True)
    bias = torch.randn(19, requires_grad=True) if with_bias else None
    assert onednn_linear.applies(x, weight)
    out = linear(x, weight, bias, relu=relu)
    grad = torch.randn_like(out)
    out.backward(grad)
    leaves = [x, weight] + ([bias] if with_bias else [])
    ours = [t.grad.clone() for t in leaves]
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref = _reference(ref_leaves[0], ref_leaves[1], ref_leaves[2] if with_bias else None, relu)
    ref.backward(grad.double())
    scale = ref.abs().max().item()
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref.detach(), rtol=0, atol=1e-6 * scale)
    for mine, theirs in zip(ours, ref_leaves):
        torch.testing.assert_close(mine.double(), theirs.grad, rtol=0, atol=1e-6 * theirs.grad.abs().max().item())


def test_no_grad_output_and_only_needed_gradients():
    torch.manual_seed(1)
    x, weight, bias = torch.randn(50, 40), torch.randn(30, 40), torch.randn(30)
    with torch.no_grad():
        out = linear(x, weight, bias, relu=True)
    torch.testing.assert_close(out.double(), _reference(x, weight, bias, True), rtol=0, atol=1e-5)
    frozen = weight.clone().requires_grad_(False)
    x.requires_grad_()
    linear(x, frozen, None).sum().backward()  # no weight gradient asked for
    torch.testing.assert_close(x.grad, frozen.sum(0).expand_as(x), rtol=1e-5, atol=1e-5)


def test_falls_back_where_oneDNN_does_not_apply():
    x, weight = torch.randn(4, 8), torch.randn(3, 8)
    assert not onednn_linear.applies(torch.empty(0, 8), weight)
    assert not onednn_linear.applies(x.double(), weight.double())
    assert linear(torch.empty(0, 8), weight).shape == (0, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_linear.applies(x, weight)
        assert linear(x, weight).dtype == torch.bfloat16  # autocast's own path, as F.linear
    torch.testing.assert_close(linear(x.double(), weight.double()), F.linear(x.double(), weight.double()))
