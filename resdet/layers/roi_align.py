"""RoIAlign on the CPU as a product of a sparse matrix of bilinear weights with the feature map.

torchvision's CPU kernels run on one thread and only in fp32, and the backward recomputes every weight for every
channel and scatters one value at a time. Here each output bin is one row of a sparse matrix S whose columns are
the feature map's pixels (b, y, x): out = S @ F and grad_F = S^T @ grad_out, with F channels-last (B*H*W, C), so
that MKL's multithreaded sparse x dense product does the work over all channels at once; for a bf16 F, torch's bf16
embedding-bag kernel does, about three times faster here (each row of S is a bag of F's rows, its values the bag's
weights). Bilinear sampling is separable: a bin's weights are the outer product of its per-row and per-column
weights, each the sum over the bin's samples of the two bilinear taps, so S holds one entry per pixel a bin touches
rather than four per sample.
An FPN pooler's levels are one product too: the levels' pixels are stacked into one F, each box's columns offset to
its level, so the pooled features come out in the boxes' order with no per-level scatter into a zeroed result.
"""
import warnings
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torchvision
from torch.autograd.function import once_differentiable

OWN_DTYPES = (torch.float32, torch.bfloat16)
# The cost model that picks the kernel of a CPU call, in nanoseconds, fitted to 144 timings of both on one thread
# (maps of 8-128 px, 64 and 256 channels, 8-1024 boxes, 1-100 samples per bin, with and without the backward; the
# project's 2-core x86 machine, MKL): torchvision's kernel costs ~1.8 ns per output element and sample, 8x that
# with its backward; ours ~0.3 ms plus ~1 ns per feature-map element (the channels-last copy) and ~4 ns per output
# element (the product and the transposing copy), twice that with the backward. Ours loses where few boxes with few
# samples each meet a large map; the model picks the slower kernel in 8 of the 144 cases, all near-ties. With more
# threads only ours gains (MKL's product and ATen's copies use torch.get_num_threads(), torchvision's kernel one
# thread), so there the model errs toward torchvision's kernel.
TORCHVISION_NS_PER_SAMPLE = 1.8
TORCHVISION_BACKWARD_FACTOR = 8.0
SPARSE_FIXED_NS = 3e5
SPARSE_NS_PER_PIXEL = 1.0
SPARSE_NS_PER_OUTPUT = 4.0


def roi_align(input: torch.Tensor, boxes: Union[torch.Tensor, List[torch.Tensor]],
              output_size: Union[int, Sequence[int]], spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> torch.Tensor:
    """torchvision.ops.roi_align, by sparse matrix products on the CPU where the cost model says that is faster."""
    pooled = _pair(output_size)
    own = _own_kernel_applies([input], boxes)
    if own and _sparse_is_faster(input, boxes, pooled, spatial_scale, sampling_ratio):
        return _SparseRoIAlign.apply(boxes, None, pooled, (spatial_scale,), sampling_ratio, aligned, input)
    if own and input.dtype == torch.bfloat16:  # torchvision's CPU kernel is fp32 only
        return torchvision.ops.roi_align(input.float(), boxes, pooled, spatial_scale, sampling_ratio,
                                         aligned).to(input.dtype)
    return torchvision.ops.roi_align(input, boxes, pooled, spatial_scale, sampling_ratio, aligned)


def roi_align_levels(features: Sequence[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                     output_size: Union[int, Sequence[int]], scales: Sequence[float], sampling_ratio: int = -1,
                     aligned: bool = False) -> torch.Tensor:
    """(K, C, PH, PW): roi k (K, 5) pooled from features[levels[k]] at scales[levels[k]], as roi_align would per
    level; on the CPU one sparse product over all levels where the cost model says that beats torchvision's kernel."""
    pooled = _pair(output_size)
    if (_own_kernel_applies(features, rois) and len({f.dtype for f in features}) == 1
            and _levels_sparse_is_faster(features, rois, levels, pooled, scales, sampling_ratio)):
        return _SparseRoIAlign.apply(rois, levels, pooled, tuple(scales), sampling_ratio, aligned, *features)
    return pool_by_level(features, rois, levels, scales, pooled,
                         lambda feature, level_rois, scale: roi_align(feature, level_rois, pooled, scale,
                                                                      sampling_ratio, aligned))


def pool_by_level(features: Sequence[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor, scales: Sequence[float],
                  pooled: Tuple[int, int], pool: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
                  ) -> torch.Tensor:
    """(K, C, PH, PW): pool(features[l], rois of level l, scales[l]) level by level, scattered back into the rois'
    order (the general path: any pooling op, graphs and exports)."""
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *pooled))  # shape: symbolic in export
    for level, (feature, scale) in enumerate(zip(features, scales)):
        index = torch.nonzero(levels == level).squeeze(1)
        out[index] = pool(feature, rois[index], scale).to(out.dtype)
    return out


def sparse_roi_align(input: torch.Tensor, boxes: torch.Tensor, output_size: Union[int, Sequence[int]],
                     spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """torchvision.ops.roi_align of a CPU fp32 or bf16 input (the output in its dtype), boxes (K, 5), always as
    sparse matrix products."""
    pooled = _pair(output_size)
    return _SparseRoIAlign.apply(boxes, None, pooled, (spatial_scale,), sampling_ratio, aligned, input)


def sparse_roi_align_levels(features: Sequence[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                            output_size: Union[int, Sequence[int]], scales: Sequence[float], sampling_ratio: int = -1,
                            aligned: bool = False) -> torch.Tensor:
    """roi_align_levels of CPU fp32 or bf16 features, always as one sparse matrix product."""
    pooled = _pair(output_size)
    return _SparseRoIAlign.apply(rois, levels, pooled, tuple(scales), sampling_ratio, aligned, *features)


def _own_kernel_applies(features: Sequence[torch.Tensor], rois) -> bool:
    """Whether the sparse kernel can take this call: CPU fp32 / bf16 maps, a (K, 5) tensor of rois, eager mode."""
    return (all(f.device.type == "cpu" and f.dtype in OWN_DTYPES for f in features) and torch.is_tensor(rois)
            and torch.backends.mkl.is_available()  # without MKL torch's sparse product is another, unmeasured code
            and not torch.compiler.is_compiling() and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing())  # graphs (export) keep one op


def _pair(output_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """(PH, PW) from torchvision's int-or-pair output size."""
    return (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)


def _sparse_is_faster(input: torch.Tensor, rois: torch.Tensor, pooled: Tuple[int, int], spatial_scale: float,
                      sampling_ratio: int) -> bool:
    """The cost model above: is the sparse product expected to beat torchvision's kernel on this call?"""
    if not len(rois):
        return False
    torchvision_ns, sparse_ns = _forward_costs(input, rois, pooled, spatial_scale, sampling_ratio)
    return _sparse_wins(torchvision_ns, sparse_ns, torch.is_grad_enabled() and input.requires_grad)


def _levels_sparse_is_faster(features: Sequence[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                             pooled: Tuple[int, int], scales: Sequence[float], sampling_ratio: int) -> bool:
    """The cost model for one product over all levels against torchvision's kernel level by level."""
    if not len(rois):
        return False
    torchvision_ns = sparse_ns = 0.0
    for level, (feature, scale) in enumerate(zip(features, scales)):
        level_torchvision_ns, level_sparse_ns = _forward_costs(feature, rois[levels == level], pooled, scale,
                                                               sampling_ratio)
        torchvision_ns += level_torchvision_ns
        sparse_ns += level_sparse_ns
    backward = torch.is_grad_enabled() and any(f.requires_grad for f in features)
    return _sparse_wins(torchvision_ns, sparse_ns, backward)


def _forward_costs(input: torch.Tensor, rois: torch.Tensor, pooled: Tuple[int, int], spatial_scale: float,
                   sampling_ratio: int) -> Tuple[float, float]:
    """Forward nanoseconds of torchvision's kernel and of the sparse product (its fixed cost aside) on one map."""
    if not len(rois):
        return 0.0, SPARSE_NS_PER_PIXEL * input.numel()  # the map is still copied
    if sampling_ratio > 0:
        samples = float(sampling_ratio**2)
    else:  # torchvision's adaptive grid, averaged over the boxes
        sides = (rois[:, 3:5] - rois[:, 1:3]) * spatial_scale  # (K, 2): w, h on the map
        grid = torch.ceil(sides / torch.tensor([pooled[1], pooled[0]], dtype=sides.dtype)).clamp(min=1)
        samples = float(grid.prod(dim=1).mean())
    outputs = len(rois) * input.shape[1] * pooled[0] * pooled[1]
    return (TORCHVISION_NS_PER_SAMPLE * outputs * samples,
            SPARSE_NS_PER_PIXEL * input.numel() + SPARSE_NS_PER_OUTPUT * outputs)


def _sparse_wins(torchvision_ns: float, sparse_ns: float, backward: bool) -> bool:
    """Compare the forward costs, each grown by its backward when there is one."""
    if backward:
        return torchvision_ns * TORCHVISION_BACKWARD_FACTOR > (SPARSE_FIXED_NS + sparse_ns) * 2
    return torchvision_ns > SPARSE_FIXED_NS + sparse_ns


def _axis_weights(start: torch.Tensor, length: torch.Tensor, bins: int, grid: torch.Tensor,
                  size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis, for K boxes starting at start (K,) with extent length (K,) split into bins of grid (K,)
    samples each, on maps of size (K,) pixels along it: the first feature index each bin touches (K, bins), how
    many it touches (K, bins), and the weights of those (K, bins, L), divided by the samples per bin, L the most any
    bin touches."""
    size = size.view(-1, 1, 1)
    steps = torch.arange(max(int(grid.max()) if len(grid) else 0, 1), dtype=start.dtype)  # (G,)
    bin_size = (length / bins)[:, None, None]
    divisor = grid.clamp(min=1).to(start.dtype)[:, None, None]
    # the sample positions exactly as torchvision's kernel computes them: (K, bins, G)
    position = (start[:, None, None] + torch.arange(bins, dtype=start.dtype)[None, :, None] * bin_size
                + (steps + 0.5) * bin_size / divisor)
    valid = (position >= -1) & (position <= size) & (steps < grid[:, None, None])
    position = position.clamp(min=0)
    low = position.long()
    last = low >= size - 1  # the last pixel: both taps on it, with all the weight on the low one
    low = torch.minimum(low, size - 1)
    high = torch.where(last, low, low + 1)
    fraction = torch.where(last, 0.0, position - low)
    first = torch.where(valid, low, size).amin(dim=2)  # (K, bins); size where no sample is valid
    touched = (torch.where(valid, high, -1).amax(dim=2) - first + 1).clamp(min=0)
    width = max(int(touched.max()) if len(grid) else 0, 1)
    weights = torch.zeros(*first.shape, width, dtype=start.dtype)
    valid = valid.to(start.dtype) / divisor
    offset = first[:, :, None]
    weights.scatter_add_(2, (low - offset).clamp(0, width - 1), (1 - fraction) * valid)
    weights.scatter_add_(2, (high - offset).clamp(0, width - 1), fraction * valid)
    return first, touched, weights


def bilinear_matrix(rois: torch.Tensor, levels: Optional[torch.Tensor], feature_shapes: Sequence[Sequence[int]],
                    pooled: Tuple[int, int], scales: Sequence[float], sampling_ratio: int,
                    aligned: bool) -> torch.Tensor:
    """Sparse CSR (K*PH*PW, sum of B*H*W over the levels) of RoIAlign's weights: row (k, ph, pw) holds bin (ph, pw)
    of roi k's weight on each pixel (b, y, x) of its level levels[k] (all level 0 when None), the levels' pixels
    one after the other, so that pooled (K*PH*PW, C) = S @ the levels' stacked channels-last features."""
    batch = feature_shapes[0][0]
    level = torch.zeros(len(rois), dtype=torch.int64) if levels is None else levels
    per_level = torch.tensor([[h, w, batch * h * w] for _, _, h, w in feature_shapes], dtype=torch.int64)
    height, width = per_level[level, 0], per_level[level, 1]  # (K,) each: the map of each roi
    level_start = torch.cumsum(per_level[:, 2], 0) - per_level[:, 2]  # (levels,) first column of each level
    rois = rois.float()
    offset = 0.5 if aligned else 0.0
    scale = torch.tensor(scales, dtype=torch.float32)[level, None]  # (K, 1)
    x1, y1, x2, y2 = (rois[:, 1:] * scale - offset).unbind(dim=1)
    box_w, box_h = x2 - x1, y2 - y1
    if not aligned:  # the legacy kernel makes every box at least one pixel wide and high
        box_w, box_h = box_w.clamp(min=1.0), box_h.clamp(min=1.0)
    pooled_h, pooled_w = pooled
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((len(rois),), sampling_ratio, dtype=torch.int64)
    else:  # adaptive: about one sample per pixel
        grid_h, grid_w = torch.ceil(box_h / pooled_h).long(), torch.ceil(box_w / pooled_w).long()
    first_y, rows, weights_y = _axis_weights(y1, box_h, pooled_h, grid_h, height)  # (K, PH), (K, PH), (K, PH, Ly)
    first_x, cols, weights_x = _axis_weights(x1, box_w, pooled_w, grid_w, width)  # (K, PW), (K, PW), (K, PW, Lx)
    # one entry per (bin, touched row, touched column), bins in row order: a ragged layout, built flat from
    # per-bin tables (K*PH*PW,): where the bin's entries start, its touched columns, the flat index of its first
    # touched pixel (b, y, x), and where its weights start in weights_y and weights_x
    per_bin = (rows[:, :, None] * cols[:, None, :]).flatten()
    row_starts = torch.zeros(len(per_bin) + 1, dtype=torch.int64)
    torch.cumsum(per_bin, 0, out=row_starts[1:])
    total = int(row_starts[-1])
    columns = int(per_level[:, 2].sum())
    if max(total, columns + int(per_level[:, 2].max())) >= 2**31:
        raise ValueError(f"sparse_roi_align: {total} weights on maps of {columns} pixels overflow the int32 indices "
                         "of MKL's sparse product; use torchvision.ops.roi_align")
    index_dtype = torch.int32  # what MKL's sparse product takes; also halves the index arithmetic's memory traffic
    shape = (len(rois), pooled_h, pooled_w)
    map_h, map_w = height[:, None, None], width[:, None, None]
    corner = (level_start[level][:, None, None] + (rois[:, 0].long()[:, None, None] * map_h + first_y[:, :, None])
              * map_w + first_x[:, None, :])
    start_y = (torch.arange(len(rois) * pooled_h).view(-1, pooled_h, 1) * weights_y.shape[2]).expand(shape)
    start_x = (torch.arange(len(rois) * pooled_w).view(-1, 1, pooled_w) * weights_x.shape[2]).expand(shape)
    bin_index = torch.repeat_interleave(per_bin.to(index_dtype), output_size=total)  # (N,) the bin of each entry

    def per_entry(table: torch.Tensor) -> torch.Tensor:
        return table.reshape(-1).to(index_dtype).index_select(0, bin_index)

    within = torch.arange(total, dtype=index_dtype) - per_entry(row_starts[:-1])
    bin_cols = per_entry(cols[:, None, :].expand(shape))
    dy = within // bin_cols
    dx = within - dy * bin_cols
    column = per_entry(corner) + dy * per_entry(map_w.expand(shape)) + dx
    values = (weights_y.view(-1).index_select(0, per_entry(start_y) + dy)
              * weights_x.view(-1).index_select(0, per_entry(start_x) + dx))
    with warnings.catch_warnings():  # torch flags sparse CSR as beta on first use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_starts.to(index_dtype), column, values,
                                       (len(per_bin), columns), check_invariants=False)


def _sparse_times_dense(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """matrix (M, N) sparse @ dense (N, C) fp32, without autocast, into an uninitialised result: `matrix @ dense`
    would first fill a zero result and copy it, two passes over an output as large as the product's."""
    with torch.autocast("cpu", enabled=False):
        return torch.empty(matrix.shape[0], dense.shape[1]).addmm_(matrix, dense, beta=0.0)  # beta 0: not read


def _bf16_sparse_times_dense(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """matrix (M, N) sparse CSR fp32 @ dense (N, C) bf16, as bf16 (M, C): an embedding bag per row, summing the
    dense rows its columns name weighted by its values (rounded to bf16), accumulated in fp32. torch's bf16 bag
    kernel is vectorised and threaded: 5 ms where MKL's fp32 sparse product took 14 ms on the same matrix
    (R50-FPN inference, 41k rows, 0.4M entries, 256 channels); its fp32 bag kernel is slower than MKL's product."""
    offsets, columns = matrix.crow_indices(), matrix.col_indices()
    with torch.autocast("cpu", enabled=False):
        return torch.nn.functional.embedding_bag(columns, dense, offsets[:-1], mode="sum",
                                                 per_sample_weights=matrix.values().to(torch.bfloat16))


def _stacked_channels_last(inputs: Sequence[torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The maps' pixels (b, y, x), level after level, as rows of one (sum of B*H*W, C) matrix of dtype: a view of a
    single channels-last map of that dtype, else one copy per map, a cast fused into it."""
    channels = inputs[0].shape[1]
    rows = inputs[0].permute(0, 2, 3, 1)
    if len(inputs) == 1 and inputs[0].dtype == dtype and rows.is_contiguous():
        return rows.reshape(-1, channels)
    stacked = torch.empty(sum(x.shape[0] * x.shape[2] * x.shape[3] for x in inputs), channels, dtype=dtype)
    start = 0
    for x in inputs:
        count = x.shape[0] * x.shape[2] * x.shape[3]
        stacked[start:start + count].view(x.shape[0], x.shape[2], x.shape[3], channels).copy_(x.permute(0, 2, 3, 1))
        start += count
    return stacked


class _SparseRoIAlign(torch.autograd.Function):
    """RoIAlign forward and backward over one or more levels as products with one sparse matrix, built in the
    forward and kept for the backward; no gradient for the rois, as torchvision's."""

    @staticmethod
    def forward(ctx, rois, levels, pooled, scales, sampling_ratio, aligned, *inputs):
        channels = inputs[0].shape[1]
        shapes = [tuple(x.shape) for x in inputs]
        matrix = bilinear_matrix(rois, levels, shapes, pooled, scales, sampling_ratio, aligned)
        if inputs[0].dtype == torch.bfloat16:  # (K*PH*PW, C) bf16, the weights rounded to bf16
            out = _bf16_sparse_times_dense(matrix, _stacked_channels_last(inputs, torch.bfloat16))
        else:  # (K*PH*PW, C) fp32
            out = _sparse_times_dense(matrix, _stacked_channels_last(inputs))
        if any(ctx.needs_input_grad[6:]):
            ctx.save_for_backward(matrix)
        ctx.shapes, ctx.dtype = shapes, inputs[0].dtype
        ctx.channels_last = [x.is_contiguous(memory_format=torch.channels_last) for x in inputs]
        rows = out.view(len(rois), *pooled, channels)
        if not any(ctx.needs_input_grad[6:]):
            # inference: (K, C, PH, PW) with channels-last strides, no transposing copy; the box head flattens it
            # as it is (box_head.FCBoxHead), a conv head takes it as it is
            return rows.to(inputs[0].dtype).permute(0, 3, 1, 2)
        result = torch.empty(len(rois), channels, *pooled, dtype=inputs[0].dtype)
        result.copy_(rows.permute(0, 3, 1, 2))  # training: contiguous, as the heads' parameters are
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        matrix, = ctx.saved_tensors
        channels = grad_output.shape[1]
        grad = torch.empty(grad_output.shape[0], *grad_output.shape[2:], channels)
        grad.copy_(grad_output.permute(0, 2, 3, 1))  # (K, PH, PW, C) fp32
        grad_features = _sparse_times_dense(matrix.t(), grad.view(-1, channels))  # (sum of B*H*W, C)
        grads, start = [], 0
        for (batch, _, height, width), needed, channels_last in zip(ctx.shapes, ctx.needs_input_grad[6:],
                                                                    ctx.channels_last):
            count = batch * height * width
            grad_input = None
            if needed:  # in the input's layout: a channels-last fp32 input's gradient is a view, no copy
                rows = grad_features[start:start + count].view(batch, height, width, channels).permute(0, 3, 1, 2)
                if channels_last and ctx.dtype == torch.float32:
                    grad_input = rows
                else:
                    layout = torch.channels_last if channels_last else torch.contiguous_format
                    grad_input = torch.empty(batch, channels, height, width, dtype=ctx.dtype, memory_format=layout)
                    grad_input.copy_(rows)
            grads.append(grad_input)
            start += count
        return (None, None, None, None, None, None, *grads)
