"""Matcher on hand-made IoU matrices, batched with padding, and against torchvision's Matcher."""
import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher

from resdet.modeling.detector.matcher import Matcher


def test_thresholds_and_labels():
    quality = torch.tensor([[0.1, 0.3, 0.69, 0.7, 0.9],
                            [0.2, 0.0, 0.0, 0.0, 0.95]])
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1])(quality)
    assert matches.tolist() == [1, 0, 0, 0, 1]
    assert labels.tolist() == [0, -1, -1, 1, 1]  # [0.3, 0.7) ignored, >= 0.7 positive


def test_low_quality_matches_with_ties():
    quality = torch.tensor([[0.4, 0.4, 0.1, 0.0],   # gt 0's best (0.4) is shared by predictions 0 and 1
                            [0.0, 0.5, 0.2, 0.6]])  # gt 1's best is prediction 3
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(quality)
    assert labels.tolist() == [1, 1, 0, 1]
    assert matches.tolist() == [0, 1, 1, 1]  # prediction 1 keeps its own best ground truth (gt 1)


def test_ground_truth_overlapping_nothing_adds_no_positive():
    quality = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.8, 0.1]])
    _, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(quality)
    assert labels.tolist() == [0, 1, 0]


def test_batched_with_padding_equals_per_image():
    g = torch.Generator().manual_seed(0)
    per_image = [torch.rand(3, 40, generator=g), torch.rand(1, 40, generator=g)]
    padded = torch.full((2, 3, 40), -1.0)
    padded[0], padded[1, :1] = per_image[0], per_image[1]
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(padded)
    for index, quality in enumerate(per_image):
        expected_matches, expected_labels = matcher(quality)
        assert torch.equal(matches[index], expected_matches) and torch.equal(labels[index], expected_labels)


def test_no_ground_truth_is_all_first_label():
    matches, labels = Matcher([0.5], [0, 1])(torch.zeros(0, 7))
    assert matches.tolist() == [0] * 7 and labels.tolist() == [0] * 7
    _, labels = Matcher([0.5], [0, 1])(torch.zeros(2, 0, 3))
    assert labels.shape == (2, 3)


@pytest.mark.parametrize("low_quality", [False, True])
def test_matches_torchvision(low_quality):
    g = torch.Generator().manual_seed(3)
    quality = torch.rand(6, 500, generator=g) * 0.9
    ours_matches, ours_labels = Matcher([0.3, 0.7], [0, -1, 1], low_quality)(quality)
    reference = TVMatcher(0.7, 0.3, allow_low_quality_matches=low_quality)(quality)
    # torchvision: -1 below the low threshold, -2 between, else the matched index
    expected_labels = torch.where(reference >= 0, 1, torch.where(reference == -1, 0, -1))
    assert torch.equal(ours_labels.long(), expected_labels)
    assert torch.equal(ours_matches[reference >= 0], reference[reference >= 0])


def test_bad_config():
    with pytest.raises(ValueError, match="IOU_LABELS"):
        Matcher([0.3, 0.7], [0, 1])
    with pytest.raises(ValueError, match="IOU_THRESHOLDS"):
        Matcher([0.7, 0.3], [0, -1, 1])
