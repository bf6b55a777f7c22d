"""Top-k accuracy on hand-made scores; ten-crop and multi-scale averaging with a hand-made model."""
import json

import pytest
import torch
from torch import nn

from resdet.evaluation import ClassificationEvaluator, classification_inference


def test_topk_on_hand_made_logits(tmp_path):
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 1
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # label 1: rank 5
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # label 5: rank 6
        [0.0, 0.0, 0.0, 0.2, 0.1, 0.3],  # label 3: rank 2
    ])
    labels = torch.tensor([0, 1, 5, 3])
    evaluator = ClassificationEvaluator(str(tmp_path))
    evaluator.process(labels[:2], scores[:2])
    evaluator.process(labels[2:], scores[2:])
    results = evaluator.evaluate()
    assert results == pytest.approx({"top1": 25.0, "top5": 75.0})
    assert json.loads((tmp_path / "results.json").read_text()) == pytest.approx(results)
    evaluator.reset()
    evaluator.process(labels[:1], scores[:1])
    assert evaluator.evaluate() == pytest.approx({"top1": 100.0, "top5": 100.0})


def test_top5_with_fewer_than_five_classes():
    evaluator = ClassificationEvaluator()
    evaluator.process(torch.tensor([2, 0]), torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]]))
    assert evaluator.evaluate() == pytest.approx({"top1": 0.0, "top5": 100.0})


class MeanColourModel(nn.Module):
    """Logits = (mean of channel 0, mean of channel 1, 0): a model whose outputs are easy to compute by hand."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, images):
        means = images.mean(dim=(2, 3))  # (N, 3)
        return torch.stack([means[:, 0], means[:, 1], torch.zeros_like(means[:, 0])], dim=1)


def test_ten_crop_averages_softmax():
    # One image; crops 0-4 favour class 0 a little, crops 5-9 favour class 1 strongly.
    crops = torch.zeros(1, 10, 3, 4, 4)
    crops[0, :5, 0] = 1.0
    crops[0, 5:, 1] = 3.0
    # Averaged logits would favour class 1 either way; check the exact averaged softmax decides class 1
    # and that the mean of softmaxes (not of logits) is what the evaluator ranks.
    p_a = torch.softmax(torch.tensor([1.0, 0.0, 0.0]), 0)
    p_b = torch.softmax(torch.tensor([0.0, 3.0, 0.0]), 0)
    expected = (5 * p_a + 5 * p_b) / 10

    captured = {}

    class Recorder(ClassificationEvaluator):
        def process(self, labels, scores):
            captured["scores"] = scores
            super().process(labels, scores)

    results = classification_inference(MeanColourModel(), [(crops, torch.tensor([1]))], Recorder(), "ten_crop")
    assert torch.allclose(captured["scores"], expected.view(1, 3), atol=1e-6)
    assert results["top1"] == 100.0


def test_fully_conv_averages_softmax_over_scales():
    # Logits (4, 0, 0) at one scale and (-4, 1, 0) at another, different sizes. The mean of the
    # softmaxes ranks class 0 first ((0.485, 0.372, 0.143)); the mean of the logits would rank class 1.
    small = torch.zeros(1, 3, 32, 32)
    small[:, 0] = 4.0
    large = torch.zeros(1, 3, 48, 64)
    large[:, 0], large[:, 1] = -4.0, 1.0
    results = classification_inference(MeanColourModel(), [([small, large], torch.tensor([0]))],
                                       ClassificationEvaluator(), "fully_conv")
    assert results["top1"] == 100.0


def test_center_and_model_mode_restored():
    model = MeanColourModel().train()
    images = torch.zeros(2, 3, 8, 8)
    images[0, 0] = 1.0
    images[1, 1] = 1.0
    results = classification_inference(model, [(images, torch.tensor([0, 2]))], ClassificationEvaluator(), "center")
    assert results["top1"] == 50.0
    assert model.training


def test_unknown_mode_names_key():
    with pytest.raises(ValueError, match="TEST.CLS_MODE"):
        classification_inference(MeanColourModel(), [(torch.zeros(1, 3, 4, 4), torch.tensor([0]))],
                                 ClassificationEvaluator(), "five_crop")
