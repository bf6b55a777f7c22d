"""Fully connected layers through oneDNN's inner product on the CPU in fp32, forward and backward.

torch computes an fp32 F.linear on the CPU with the BLAS it was built with (MKL), and under bf16 autocast with
oneDNN. On the project's reference machine (AMD EPYC, Zen 4, 2 threads) oneDNN's fp32 inner product takes half
MKL's time: the box head's fc1 (1024 x 12544 -> 1024) 58 ms against 126 ms forward, and the two products of its
backward 71 and 73 ms against 139 and 140 ms, with fp32 results (differences of 1e-6 relative to the outputs'
scale, from the summation order). The backward is a custom autograd Function over the same op: grad_x = grad @ W
is an inner product with W^T as its weight, grad_W = grad^T @ x one with x^T; both are passed as transposed
views, which oneDNN reads without a copy.

Set RESDET_ONEDNN_LINEAR=0 in the environment to use F.linear everywhere (e.g. to compare on another CPU).
"""
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _inner_product_exists() -> bool:
    try:  # oneDNN's inference op (the one torch.compile's CPU backend uses), absent from builds without oneDNN
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._linear_pointwise is not None
    except (AttributeError, RuntimeError):
        return False


ENABLED = _inner_product_exists() and os.environ.get("RESDET_ONEDNN_LINEAR", "1") != "0"


def _inner_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    """x (..., K) @ weight (N, K)^T + bias, then a ReLU if asked, in one oneDNN primitive."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether linear() takes oneDNN's path: eager fp32 on the CPU, autocast off, a non-empty input."""
    if (not ENABLED or torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()):  # graphs keep F.linear (and never see the data-dependent size)
        return False
    return (x.device.type == "cpu" and weight.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() >= 2 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu"))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           relu: bool = False) -> torch.Tensor:
    """F.linear(x, weight, bias), then a ReLU if asked; through oneDNN where applies() (the ReLU fused when no
    gradient flows)."""
    if not applies(x, weight):
        out = F.linear(x, weight, bias)
        return F.relu_(out) if relu else out
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        # (M, K) in the Function: an output it returned as a view could not be modified in place (the ReLU)
        out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], weight.shape[0])
        return F.relu_(out) if relu else out
    return _inner_product(x, weight, bias, relu)


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _inner_product(x, weight, bias, relu=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # (M, N); x (M, K)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # (M, N) @ (N, K): weight^T (K, N) as the inner product's weight
            grad_x = _inner_product(grad, weight.t(), None, relu=False)
        if ctx.needs_input_grad[1]:  # (N, M) @ (M, K): x^T (K, M) as the weight
            grad_weight = _inner_product(grad.t(), x.t(), None, relu=False)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias
