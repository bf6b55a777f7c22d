"""conv followed by norm, with a FrozenBatchNorm2d, or a BatchNorm2d in eval mode, folded into the conv.

Such a norm computes y = x * scale + shift with fixed scale and shift, so conv-then-norm equals one conv with
weight W * scale and bias b * scale + shift: one pass over the output instead of three (conv, multiply, add), and
under autocast the activations stay in the low precision between layers instead of a round trip through fp32 for
the norm. Parameters and state dict stay those of the two modules. The folded conv rounds differently from the
two steps: outputs agree to about 1e-6 relative in fp32.
"""
import weakref
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d


class _Folded(NamedTuple):
    sources: Tuple[Optional[torch.Tensor], ...]  # the tensors it was computed from
    versions: Tuple[int, ...]  # their version counters then (bumped by every in-place update)
    context: Tuple[bool, torch.dtype]  # (inference mode, dtype the conv runs in)
    weight: torch.Tensor
    bias: torch.Tensor


# frozen norm -> its last fold, reused while nothing it came from has changed
_FOLDED: "weakref.WeakKeyDictionary[nn.Module, _Folded]" = weakref.WeakKeyDictionary()


def is_foldable(norm: nn.Module) -> bool:
    """Whether norm is a fixed per-channel affine that no hook observes (a hook needs the norm's own output,
    e.g. tools/layer_response.py): a FrozenBatchNorm2d, or a (Sync)BatchNorm2d in eval mode with running
    statistics."""
    if norm._forward_hooks or norm._forward_pre_hooks:
        return False
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (type(norm) in (nn.BatchNorm2d, nn.SyncBatchNorm) and not norm.training
            and norm.running_mean is not None)


def fold_norm(conv: nn.Conv2d, norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight (C_out, C_in/groups, kh, kw) and bias (C_out,) of the one conv equal to norm(conv(x))."""
    scale = (norm.running_var + norm.eps).rsqrt()  # (C_out,)
    if norm.weight is not None:  # None for BatchNorm2d(affine=False)
        scale = norm.weight * scale
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv.weight * scale[:, None, None, None], shift


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _cached_fold(conv: nn.Conv2d, norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """fold_norm, computed once per change of the weights where no gradient flows through it (inference, or a
    frozen conv), already in the autocast dtype: each call then skips a multiply and a cast of every weight."""
    sources = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    present = [t for t in sources if t is not None]
    grad_flows = torch.is_grad_enabled() and any(t.requires_grad for t in present)
    if grad_flows or any(t.is_inference() for t in present):  # inference tensors have no version counter
        return fold_norm(conv, norm)
    versions = tuple(t._version for t in present)
    dtype = _autocast_dtype(conv.weight.device.type) or conv.weight.dtype
    context = (torch.is_inference_mode_enabled(), dtype)
    cached = _FOLDED.get(norm)
    if (cached is None or cached.versions != versions or cached.context != context
            or any(a is not b for a, b in zip(cached.sources, sources))):
        weight, bias = fold_norm(conv, norm)
        cached = _FOLDED[norm] = _Folded(sources, versions, context, weight.to(dtype), bias.to(dtype))
    return cached.weight, cached.bias


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """norm(conv(x)), as one conv when the norm is a fixed affine no hook observes (is_foldable)."""
    if not is_foldable(norm):
        return norm(conv(x))
    weight, bias = _cached_fold(conv, norm)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
