"""Balanced sampler: counts per image, fractions, subsets of the candidates, uniform choice; grouped top-k."""
import torch

from resdet.modeling.detector.boxes import first_k_per_group
from resdet.modeling.detector.sampler import BalancedSampler


def _labels(counts):
    """Flat positive/negative masks and image index for per-image (num_pos, num_neg, num_ignored)."""
    positive, negative, image = [], [], []
    for index, (p, n, i) in enumerate(counts):
        total = p + n + i
        positive.append(torch.arange(total) < p)
        negative.append((torch.arange(total) >= p) & (torch.arange(total) < p + n))
        image.append(torch.full((total,), index))
    return torch.cat(positive), torch.cat(negative), torch.cat(image)


def test_counts_per_image():
    torch.manual_seed(0)
    positive, negative, image = _labels([(100, 1000, 50), (10, 1000, 0), (0, 5, 3)])
    sampled_pos, sampled_neg = BalancedSampler(256, 0.5)(positive, negative, image, 3)
    assert torch.bincount(image[sampled_pos], minlength=3).tolist() == [100, 10, 0]
    assert torch.bincount(image[sampled_neg], minlength=3).tolist() == [156, 246, 5]  # 256 - 100 positives
    assert not (sampled_pos & ~positive).any() and not (sampled_neg & ~negative).any()


def test_fraction_rounds_down_and_fills_with_negatives():
    torch.manual_seed(0)
    positive, negative, image = _labels([(50, 50, 0)])
    sampled_pos, sampled_neg = BalancedSampler(10, 0.25)(positive, negative, image, 1)
    assert int(sampled_pos.sum()) == 2 and int(sampled_neg.sum()) == 8  # int(10 * 0.25) = 2


def test_choice_is_uniform_and_random():
    positive, negative, image = _labels([(10, 0, 0)])
    sampler = BalancedSampler(6, 0.5)  # 3 of 10 positives each time
    torch.manual_seed(0)
    hits = sum(sampler(positive, negative, image, 1)[0].float() for _ in range(2000))
    assert torch.allclose(hits / 2000, torch.full((10,), 0.3), atol=0.05)
    first = sampler(positive, negative, image, 1)[0]
    assert any(not torch.equal(first, sampler(positive, negative, image, 1)[0]) for _ in range(10))


def test_first_k_per_group():
    group = torch.tensor([1, 0, 1, 1, 0, 2])
    assert first_k_per_group(group, 2, 3).tolist() == [True, True, True, False, True, True]
    assert first_k_per_group(group, torch.tensor([0, 1, 1]), 3).tolist() == [True, False, False, False, False, True]
