"""Weights derived from parameters (a norm folded into a conv, a cast to the autocast dtype, oneDNN's packed
layout), computed once and reused while nothing they come from changes and no gradient flows through them
(inference, or frozen layers).

Under autocast every call would otherwise cast each fp32 weight to the low precision again: for R50-FPN about 40M
parameters read and rewritten per forward. And oneDNN reorders a plain conv weight into its blocked layout on every
call: with the weight packed once (where the input is channels-last, as in the detector's and the classifier's
inference) a 3x3 512-channel conv on a 16x16 map takes 2.3 ms instead of 5.5 ms, with identical outputs. Each
cached form costs one more copy of the weights it holds.
"""
import weakref
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn_linear

Weights = Tuple[Optional[torch.Tensor], ...]


class _Entry(NamedTuple):
    sources: Tuple[Optional[torch.Tensor], ...]  # the tensors it was computed from
    versions: Tuple[int, ...]  # their version counters then (bumped by every in-place update)
    context: Tuple[bool, torch.dtype]  # (inference mode, dtype the layer runs in)
    values: Weights


# owner module -> {what was derived: its last value}
_CACHE: "weakref.WeakKeyDictionary[nn.Module, Dict[str, _Entry]]" = weakref.WeakKeyDictionary()


def _packing_ops_exist() -> bool:
    try:  # oneDNN's inference ops (those torch.compile's CPU backend uses), absent from builds without oneDNN
        return (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._convolution_pointwise is not None
                and torch.ops.mkldnn._reorder_convolution_weight is not None)
    except (AttributeError, RuntimeError):
        return False


PACKING = _packing_ops_exist()


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype of the device type, or None where autocast is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def gradient_flows(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether autograd records an operation on these tensors."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def cached_weights(owner: nn.Module, sources: Sequence[Optional[torch.Tensor]], compute: Callable[[], Weights],
                   kind: str = "", finish: Optional[Callable[..., Weights]] = None) -> Weights:
    """compute(), cast to the autocast dtype (the sources' otherwise), then finish(*values) if given, from the cache
    while the sources (the same tensors, unmodified) and the context are those it was computed in; compute() as it
    is whenever a gradient flows. `kind` tells apart different weights derived from one owner."""
    sources = tuple(sources)
    present = [t for t in sources if t is not None]
    if gradient_flows(present) or any(t.is_inference() for t in present):  # inference tensors: no version counter
        return compute()
    versions = tuple(t._version for t in present)
    dtype = autocast_dtype(present[0].device.type) or present[0].dtype
    context = (torch.is_inference_mode_enabled(), dtype)
    entries = _CACHE.setdefault(owner, {})
    entry = entries.get(kind)
    if (entry is None or entry.versions != versions or entry.context != context
            or any(a is not b for a, b in zip(entry.sources, sources))):
        values = tuple(None if v is None else v.to(dtype) for v in compute())
        entry = entries[kind] = _Entry(sources, versions, context, finish(*values) if finish else values)
    return entry.values


def forget(model: nn.Module) -> None:
    """Drop what is cached for the model's modules: recomputed at the next use."""
    for module in model.modules():
        _CACHE.pop(module, None)


class ForgetsOnModeSwitch(nn.Module):
    """A model whose train() / eval() forget() its cached weights (FasterRCNN, Classifier), so that parameters
    changed where their version counters do not see it (through `.data`, or a kernel writing in place) are picked
    up at the next switch."""

    def train(self, mode: bool = True) -> nn.Module:
        forget(self)
        return super().train(mode)


def layer_weights(layer: nn.Module) -> Weights:
    """(weight, bias) of a conv or linear layer, already in the autocast dtype when autocast is on."""
    if autocast_dtype(layer.weight.device.type) is None:
        return layer.weight, layer.bias
    return cached_weights(layer, (layer.weight, layer.bias), lambda: (layer.weight, layer.bias))


def observed(module: nn.Module) -> bool:
    """Whether a forward hook would see the module's call (its own hooks or global ones): it must then be called."""
    module_hooks = torch.nn.modules.module
    return bool(module._forward_hooks or module._forward_pre_hooks or module_hooks._global_forward_hooks
                or module_hooks._global_forward_pre_hooks)


def linear(layer: nn.Linear, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """layer(x), then a ReLU if asked; its weights cast once (layer_weights) and the product through oneDNN in fp32
    on the CPU (onednn_linear), unless a hook observes the layer."""
    if observed(layer):
        out = layer(x)
        return F.relu_(out) if relu else out
    return onednn_linear.linear(x, *layer_weights(layer), relu=relu)


def conv2d(layer: nn.Conv2d, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """layer(x) of a zero-padded conv, then a ReLU if asked, its weights cast and packed once (derived_conv2d)
    unless a hook observes the layer."""
    if observed(layer):
        out = layer(x)
        return F.relu_(out) if relu else out
    return derived_conv2d(layer, layer, x, (layer.weight, layer.bias), lambda: (layer.weight, layer.bias), relu)


def derived_conv2d(owner: nn.Module, conv: nn.Conv2d, x: torch.Tensor, sources: Sequence[Optional[torch.Tensor]],
                   compute: Callable[[], Weights], relu: bool = False) -> torch.Tensor:
    """conv2d of x with conv's geometry and the (weight, bias) compute() derives from sources, then a ReLU if asked;
    the weights cached (cached_weights) and, for a channels-last CPU input with no gradient flowing, packed for
    oneDNN, which also applies the ReLU in the same pass."""
    dtype = autocast_dtype(x.device.type) or conv.weight.dtype
    if _packable(x, dtype, sources) and isinstance(conv.padding, tuple):  # not padding="same"
        def pack(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Weights:
            return torch.ops.mkldnn._reorder_convolution_weight(weight, list(conv.padding), list(conv.stride),
                                                                list(conv.dilation), conv.groups, list(x.shape)), bias
        weight, bias = cached_weights(owner, sources, compute, kind="packed", finish=pack)
        return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), weight, bias, list(conv.padding),
                                                       list(conv.stride), list(conv.dilation), conv.groups,
                                                       "relu" if relu else "none", [], "")
    weight, bias = cached_weights(owner, sources, compute)
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return F.relu_(out) if relu else out


def _packable(x: torch.Tensor, dtype: torch.dtype, sources: Sequence[Optional[torch.Tensor]]) -> bool:
    """Whether the packed oneDNN path applies: no gradient, eager mode, a CPU channels-last fp32/bf16 input."""
    present = [t for t in sources if t is not None]
    return (PACKING and x.device.type == "cpu" and x.dim() == 4 and dtype in (torch.float32, torch.bfloat16)
            and x.dtype in (torch.float32, torch.bfloat16) and (x.dtype == dtype or autocast_dtype("cpu") == dtype)
            and x.is_contiguous(memory_format=torch.channels_last)
            and not gradient_flows(present) and not any(t.is_inference() for t in present)
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling() and not torch.compiler.is_exporting())
