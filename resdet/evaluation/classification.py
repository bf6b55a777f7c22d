"""Top-1 / top-5 accuracy, and inference in the three test modes of the paper.

- "center": one crop per image, batches (N,3,S,S); scores are the logits.
- "ten_crop": batches (N,10,3,S,S) (4 corners, centre and their flips); softmax averaged over the crops.
- "fully_conv": one image at several scales (list of (1,3,h,w)); softmax of the whole image averaged.
"""
import json
import logging
import os
from typing import Dict, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import comm
from ..errors import ConfigError

logger = logging.getLogger(__name__)

CLS_MODES = ("center", "ten_crop", "fully_conv")


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int]) -> Dict[int, int]:
    """For each k, how many rows of scores (N,C) have their label among the k highest (k capped at C)."""
    max_k = min(max(topk), scores.shape[1])
    top = scores.topk(max_k, dim=1).indices  # (N, max_k)
    hits = top == labels.view(-1, 1)  # (N, max_k), at most one True per row
    return {k: int(hits[:, : min(k, max_k)].any(dim=1).sum()) for k in topk}


class ClassificationEvaluator:
    """Accumulates top-k hits over batches and ranks; writes {"top1": %, "top5": %} to output_dir/results.json."""

    def __init__(self, output_dir: str = None, topk: Sequence[int] = (1, 5)):
        self.output_dir = output_dir
        self.topk = tuple(topk)
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._correct = {k: 0 for k in self.topk}
        self._count = 0

    def process(self, labels: torch.Tensor, scores: torch.Tensor) -> None:
        """Add a batch: labels (N,) and scores (N, num_classes) (logits or probabilities)."""
        for k, correct in topk_correct(scores.detach().float().cpu(), labels.cpu(), self.topk).items():
            self._correct[k] += correct
        self._count += labels.numel()

    def evaluate(self) -> Dict[str, float]:
        """Percentages over all ranks; rank 0 writes results.json."""
        gathered = comm.all_gather((self._correct, self._count))
        count = sum(c for _, c in gathered)
        if count == 0:
            raise ValueError("ClassificationEvaluator: no images were processed")
        results = {f"top{k}": 100.0 * sum(corr[k] for corr, _ in gathered) / count for k in self.topk}
        logger.info("classification on %d images: %s", count, ", ".join(f"{n} {v:.2f}%" for n, v in results.items()))
        if self.output_dir and comm.is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "results.json"), "w") as file:
                json.dump(results, file)
        return results


def predict_scores(model: nn.Module, images, mode: str, device: torch.device) -> torch.Tensor:
    """Class scores (N, C) for one test batch in TEST.CLS_MODE `mode`."""
    if mode == "center":
        return model(images.to(device))
    if mode == "ten_crop":
        num_images, num_crops = images.shape[:2]
        logits = model(images.to(device).flatten(0, 1))  # (N*10, C)
        return F.softmax(logits.float(), dim=1).view(num_images, num_crops, -1).mean(dim=1)
    if mode == "fully_conv":
        probabilities = [F.softmax(model(scaled.to(device)).float(), dim=1) for scaled in images]  # each (1, C)
        return torch.stack(probabilities).mean(dim=0)
    raise ConfigError(f"TEST.CLS_MODE: unknown {mode!r}; choose one of {CLS_MODES}")


@torch.no_grad()
def classification_inference(model: nn.Module, data_loader: Iterable, evaluator: ClassificationEvaluator,
                             mode: str = "center") -> Dict[str, float]:
    """Run the model in eval mode over this rank's shard of (images, labels) batches and evaluate."""
    # Unwrapped: ranks may hold different numbers of batches, and the DDP wrapper would try to sync them.
    model = comm.unwrap_model(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        for images, labels in data_loader:
            evaluator.process(labels, predict_scores(model, images, mode, device))
    finally:
        model.train(was_training)
    return evaluator.evaluate()
