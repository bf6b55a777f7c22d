"""resdet's RoIAlign against torchvision.ops.roi_align: outputs and input gradients, fp32 and bf16, edge boxes."""
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from resdet.layers import roi_align as roi_align_module
from resdet.layers.roi_align import (
    _sparse_is_faster,
    roi_align,
    roi_align_levels,
    sparse_roi_align,
    sparse_roi_align_levels,
)
from resdet.modeling.detector import poolers
from resdet.modeling.detector.poolers import ROIPooler

SHAPE = (2, 6, 24, 31)  # (B, C, H, W): the map of a 96 x 124 image at stride 4
SCALE = 0.25


def edge_rois(generator: torch.Generator) -> torch.Tensor:
    """(K, 5) rois in image pixels: random ones, many crossing the border, and tiny, empty, huge, outside,
    straddling and inverted ones."""
    extent = torch.tensor([SHAPE[3], SHAPE[2]]) / SCALE  # (w, h) of the image
    centres = (torch.rand(40, 2, generator=generator) * 1.4 - 0.2) * extent
    sides = torch.rand(40, 2, generator=generator) ** 2 * 1.5 * extent
    by_hand = torch.tensor([
        [10.0, 10.0, 10.01, 10.02],  # a hundredth of a pixel
        [50.0, 40.0, 50.0, 40.0],  # empty
        [-2000.0, -1500.0, 3000.0, 2500.0],  # 40 times the image: over 140 samples a bin side if adaptive
        [-80.0, -60.0, -20.0, -5.0],  # outside, above left
        [130.0, 100.0, 400.0, 300.0],  # outside, below right
        [-3.0, 90.0, 126.0, 97.0],  # straddling the bottom border
        [60.0, 50.0, 40.0, 30.0],  # inverted
        [0.0, 0.0, 124.0, 96.0],  # the whole image
    ])
    boxes = torch.cat([torch.cat([centres - sides / 2, centres + sides / 2], dim=1), by_hand])
    index = torch.randint(0, SHAPE[0], (len(boxes), 1), generator=generator).float()
    return torch.cat([index, boxes], dim=1)


def pool_and_grad(fn, feature: torch.Tensor, rois: torch.Tensor, grad_output: torch.Tensor, *args):
    """fn's output and the gradient of <output, grad_output> with respect to the feature."""
    feature = feature.detach().requires_grad_()
    out = fn(feature, rois, *args)
    (grad,) = torch.autograd.grad(out, feature, grad_output.to(out.dtype))
    return out, grad


@pytest.mark.parametrize("sampling_ratio", [0, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_fp32_equals_torchvision_forward_and_backward(sampling_ratio, aligned):
    generator = torch.Generator().manual_seed(sampling_ratio)
    feature, rois = torch.randn(SHAPE, generator=generator), edge_rois(generator)
    for output_size, pooled in ((7, (7, 7)), ((5, 3), (5, 3))):
        args = (output_size, SCALE, sampling_ratio, aligned)
        grad_output = torch.randn(len(rois), SHAPE[1], *pooled, generator=generator)
        ours, ours_grad = pool_and_grad(sparse_roi_align, feature, rois, grad_output, *args)
        reference, reference_grad = pool_and_grad(tv_roi_align, feature, rois, grad_output, *args)
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours_grad, reference_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_bf16_equals_torchvision_on_the_fp32_input(aligned):
    generator = torch.Generator().manual_seed(1)
    feature, rois = torch.randn(SHAPE, generator=generator).bfloat16(), edge_rois(generator)
    grad_output = torch.randn(len(rois), SHAPE[1], 7, 7, generator=generator).bfloat16()
    args = (7, SCALE, 0, aligned)
    ours, ours_grad = pool_and_grad(sparse_roi_align, feature, rois, grad_output, *args)
    reference, reference_grad = pool_and_grad(tv_roi_align, feature.float(), rois, grad_output, *args)
    assert ours.dtype == ours_grad.dtype == torch.bfloat16
    # the forward rounds each bilinear weight and the output to bf16 (unit roundoff u = 2^-8) and sums in fp32:
    # |error| <= u * (sum of |weight * feature| + |output|); the sum of |weight * feature| is the pooling of |feature|
    magnitude = tv_roi_align(feature.float().abs(), rois, *args)
    assert ((ours.float() - reference).abs() <= 2**-8 * (magnitude + reference.abs()) * 1.01 + 1e-6).all()
    torch.testing.assert_close(ours.float(), reference, atol=1e-2, rtol=1e-2)
    # the backward is computed in fp32, so only its output's rounding to bf16 differs
    torch.testing.assert_close(ours_grad.float(), reference_grad, atol=1e-2, rtol=1e-2)


def test_autocast_keeps_fp32_inputs_exact_and_bf16_inputs_bf16():
    generator = torch.Generator().manual_seed(2)
    feature, rois = torch.randn(SHAPE, generator=generator), edge_rois(generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp32 = sparse_roi_align(feature, rois, 7, SCALE, 2, True)
        bf16 = roi_align(feature.bfloat16(), rois, 7, SCALE, 2, True)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16  # as torchvision's autocast wrapper does
    torch.testing.assert_close(fp32, tv_roi_align(feature, rois, 7, SCALE, 2, True), atol=1e-5, rtol=1e-5)


def test_roi_align_equals_torchvision_whichever_kernel_it_picks():
    generator = torch.Generator().manual_seed(3)
    feature, rois = torch.randn(SHAPE, generator=generator), edge_rois(generator)
    grad_output = torch.randn(len(rois), SHAPE[1], 7, 7, generator=generator)
    ours, ours_grad = pool_and_grad(roi_align, feature, rois, grad_output, 7, SCALE, 0, True)
    reference, reference_grad = pool_and_grad(tv_roi_align, feature, rois, grad_output, 7, SCALE, 0, True)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-5, rtol=1e-5)
    few = rois[:2]
    with torch.inference_mode():
        torch.testing.assert_close(roi_align(feature, few, 7, SCALE, 2), tv_roi_align(feature, few, 7, SCALE, 2))
        assert roi_align(feature.bfloat16(), few, 7, SCALE, 2).dtype == torch.bfloat16  # torchvision's is fp32 only
    as_list = [rois[rois[:, 0] == i, 1:] for i in range(SHAPE[0])]  # torchvision's other box format
    torch.testing.assert_close(roi_align(feature, as_list, 7, SCALE, 2), tv_roi_align(feature, as_list, 7, SCALE, 2))


def test_kernel_choice_at_the_extremes_of_the_cost_model():
    generator = torch.Generator().manual_seed(5)
    big_map = torch.randn(1, 256, 128, 128)
    few_small = torch.tensor([[0.0, 10.0, 10.0, 20.0, 20.0]] * 4)
    assert not _sparse_is_faster(big_map, few_small, (7, 7), 1 / 8, 2)  # the map's copy outweighs the work
    assert not _sparse_is_faster(big_map, torch.zeros(0, 5), (7, 7), 1 / 8, 0)
    toy_level = torch.randn(4, 64, 32, 40, requires_grad=True)
    xy = torch.rand(512, 2, generator=generator) * 100
    many = torch.cat([torch.randint(0, 4, (512, 1), generator=generator).float(), xy, xy + 20], dim=1)
    assert _sparse_is_faster(toy_level, many, (7, 7), 1 / 4, 0)  # a training step's pooling: backward dominates
    with torch.no_grad():
        assert _sparse_is_faster(big_map, many, (7, 7), 1 / 4, 2)  # inference, many boxes of 4 samples a bin


@pytest.mark.parametrize("fn", [roi_align, sparse_roi_align])
def test_no_boxes(fn):
    feature = torch.randn(SHAPE, requires_grad=True)
    out = fn(feature, torch.zeros(0, 5), 7, SCALE, 0, True)
    assert out.shape == (0, SHAPE[1], 7, 7)
    out.sum().backward()
    assert feature.grad.shape == SHAPE and not feature.grad.any()


LEVEL_SHAPES = [(2, 6, 24 // 2**k, 32 // 2**k) for k in range(4)]  # strides 4..32 of a 96 x 128 image
LEVEL_SCALES = [SCALE / 2**k for k in range(4)]


def per_level_torchvision(features, rois, levels, *args):
    """The reference: torchvision's roi_align level by level, scattered back into the rois' order."""
    output_size, sampling_ratio, aligned = args
    out = features[0].new_zeros(len(rois), features[0].shape[1], output_size, output_size)
    for level, (feature, scale) in enumerate(zip(features, LEVEL_SCALES)):
        index = torch.nonzero(levels == level).squeeze(1)
        out[index] = tv_roi_align(feature, rois[index], output_size, scale, sampling_ratio, aligned)
    return out


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_levels_in_one_product_equal_torchvision_level_by_level(sampling_ratio, aligned):
    generator = torch.Generator().manual_seed(7 + sampling_ratio)
    rois = edge_rois(generator)
    levels = torch.randint(0, len(LEVEL_SHAPES), (len(rois),), generator=generator)  # edge boxes on every level
    features = [torch.randn(shape, generator=generator, requires_grad=True) for shape in LEVEL_SHAPES]
    features[0] = features[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad_output = torch.randn(len(rois), 6, 7, 7, generator=generator)
    args = (7, sampling_ratio, aligned)
    ours = sparse_roi_align_levels(features, rois, levels, 7, LEVEL_SCALES, sampling_ratio, aligned)
    reference = per_level_torchvision(features, rois, levels, *args)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    ours_grads = torch.autograd.grad(ours, features, grad_output)
    for got, want in zip(ours_grads, torch.autograd.grad(reference, features, grad_output)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # each gradient in its map's layout: the channels-last level's (the detector's) as the others' NCHW
    assert [g.is_contiguous(memory_format=torch.channels_last) for g in ours_grads] == [True, False, False, False]
    assert all(g.is_contiguous() for g in ours_grads[1:])
    with torch.inference_mode():  # a bf16 pyramid: bf16 weights and output, summed in fp32
        bf16 = sparse_roi_align_levels([f.detach().bfloat16() for f in features], rois, levels, 7, LEVEL_SCALES,
                                       sampling_ratio, aligned)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), reference.detach(), atol=3e-2, rtol=1e-2)


def test_a_level_may_have_no_boxes_and_a_map_no_gradient():
    generator = torch.Generator().manual_seed(8)
    rois = edge_rois(generator)
    levels = torch.randint(0, 2, (len(rois),), generator=generator) * 2  # levels 0 and 2 only
    features = [torch.randn(shape, generator=generator) for shape in LEVEL_SHAPES]
    features[2].requires_grad_()
    ours = sparse_roi_align_levels(features, rois, levels, 7, LEVEL_SCALES, 0, True)
    torch.testing.assert_close(ours, per_level_torchvision(features, rois, levels, 7, 0, True), atol=1e-5,
                               rtol=1e-5)
    (grad,) = torch.autograd.grad(ours.sum(), features[2])
    assert grad.shape == LEVEL_SHAPES[2] and grad.any()


def test_roi_align_levels_equals_torchvision_whichever_kernel_it_picks(monkeypatch):
    generator = torch.Generator().manual_seed(9)
    rois = edge_rois(generator)
    levels = torch.randint(0, len(LEVEL_SHAPES), (len(rois),), generator=generator)
    features = [torch.randn(shape, generator=generator) for shape in LEVEL_SHAPES]
    reference = per_level_torchvision(features, rois, levels, 7, 2, True)
    for sparse_wins in (False, True):
        monkeypatch.setattr(roi_align_module, "_sparse_wins", lambda *args, wins=sparse_wins: wins)
        torch.testing.assert_close(roi_align_levels(features, rois, levels, 7, LEVEL_SCALES, 2, True), reference,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign"])
def test_pooler_equals_torchvision_on_each_boxs_level(pooler_type):
    generator = torch.Generator().manual_seed(4)
    features = [torch.randn(shape, generator=generator) for shape in LEVEL_SHAPES]
    xy = torch.rand(300, 2, generator=generator) * 100
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=generator) ** 2 * 700 + 1], dim=1)
    image_index = torch.randint(0, 2, (300,), generator=generator).sort().values
    pooler = ROIPooler(7, [4, 8, 16, 32], 0, pooler_type)
    levels = poolers.assign_fpn_levels(boxes, 2, 5)
    assert len(levels.unique()) == 4  # every level pooled
    rois = torch.cat([image_index[:, None].float(), boxes], dim=1)
    reference = per_level_torchvision(features, rois, levels, 7, 0, pooler_type == "ROIAlignV2")
    torch.testing.assert_close(pooler(features, boxes, image_index), reference, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # inference: a channels-last pyramid, as the detector's is
        last = [f.contiguous(memory_format=torch.channels_last) for f in features]
        torch.testing.assert_close(pooler(last, boxes, image_index), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ROIPooler(7, [4], 0, pooler_type)(last[:1], boxes, image_index),
                                   per_level_torchvision(features[:1], rois, torch.zeros_like(levels), 7, 0,
                                                         pooler_type == "ROIAlignV2"), atol=1e-5, rtol=1e-5)


def test_export_keeps_torchvisions_op():
    class Pool(torch.nn.Module):
        def forward(self, feature, rois):
            return roi_align(feature, rois, 7, SCALE, 0, True)
    generator = torch.Generator().manual_seed(6)
    feature, rois = torch.randn(SHAPE, generator=generator), edge_rois(generator)
    exported = torch.export.export(Pool(), (feature, rois))
    called = [node.target for node in exported.graph.nodes if node.op == "call_function"]
    assert called == [torch.ops.torchvision.roi_align.default]
    torch.testing.assert_close(exported.module()(feature, rois), tv_roi_align(feature, rois, 7, SCALE, 0, True))
