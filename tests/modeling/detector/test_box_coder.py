"""BoxCoder against a hand example and torchvision's BoxCoder (same numerics, bit for bit)."""
import math

import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from resdet.modeling.detector.box_coder import BoxCoder, box_regression_loss


def _random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 100
    wh = torch.rand(n, 2, generator=generator) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_hand_example():
    reference = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    target = torch.tensor([[1.0, 2.0, 11.0, 22.0]])  # centre (6, 12), 10 x 20
    expected = torch.tensor([[0.1, 0.7, 0.0, math.log(2)]])
    assert torch.allclose(BoxCoder((1, 1, 1, 1)).encode(target, reference), expected)
    deltas = BoxCoder((10, 10, 5, 5)).encode(target, reference)
    assert torch.allclose(deltas, torch.tensor([[1.0, 7.0, 0.0, 5 * math.log(2)]]))
    assert torch.allclose(BoxCoder((10, 10, 5, 5)).decode(deltas, reference), target)


def test_round_trip_and_broadcast():
    g = torch.Generator().manual_seed(0)
    coder = BoxCoder((10, 10, 5, 5))
    references, targets = _random_boxes(50, g), _random_boxes(50, g)
    assert torch.allclose(coder.decode(coder.encode(targets, references), references), targets, atol=1e-3)
    per_class = torch.randn(50, 3, 4, generator=g)
    decoded = coder.decode(per_class, references[:, None, :])
    assert decoded.shape == (50, 3, 4)
    assert torch.equal(decoded[:, 1], coder.decode(per_class[:, 1], references))


def test_scale_clamp():
    coder = BoxCoder((1, 1, 1, 1))
    box = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    assert torch.allclose(box[0, 2] - box[0, 0], torch.tensor(1000.0))  # exp(log(1000/16)) * 16


def test_matches_torchvision_bitwise():
    g = torch.Generator().manual_seed(1)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        ours, reference = BoxCoder(weights), TVBoxCoder(weights)
        references, targets = _random_boxes(200, g), _random_boxes(200, g)
        assert torch.equal(ours.encode(targets, references), reference.encode_single(targets, references))
        deltas = torch.randn(200, 4 * 5, generator=g) * 2
        expected = reference.decode_single(deltas, references).view(200, 5, 4)
        assert torch.equal(ours.decode(deltas.view(200, 5, 4), references[:, None]), expected)


def test_regression_loss_kinds():
    pred, target = torch.tensor([[0.5, -2.0, 0.0, 0.05]]), torch.zeros(1, 4)
    assert torch.isclose(box_regression_loss(pred, target, "l1", 0.0), torch.tensor(2.55))
    assert torch.isclose(box_regression_loss(pred, target, "smooth_l1", 0.0), torch.tensor(2.55))
    # beta 0.1: |x| < 0.1 -> 0.5 x^2 / 0.1, else |x| - 0.05
    expected = (0.5 - 0.05) + (2.0 - 0.05) + 0.0 + 0.5 * 0.05**2 / 0.1
    assert torch.isclose(box_regression_loss(pred, target, "smooth_l1", 0.1), torch.tensor(expected))
