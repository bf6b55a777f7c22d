"""Balanced sampling of positives and negatives per image, for the RPN's anchors and the RoI heads' proposals."""
from typing import Tuple

import torch

from .boxes import first_k_per_group


class BalancedSampler:
    """Per image up to batch_size_per_image elements, at most positive_fraction of them positive; the
    remainder filled with negatives; each subset chosen uniformly at random."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if batch_size_per_image <= 0 or not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"BATCH_SIZE_PER_IMAGE / POSITIVE_FRACTION: need > 0 and in [0, 1], "
                             f"got {batch_size_per_image} / {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, positive: torch.Tensor, negative: torch.Tensor, image_index: torch.Tensor,
                 num_images: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N,) bool masks of sampled positives and negatives, given (N,) masks and the (N,) image of each."""
        max_positive = int(self.batch_size_per_image * self.positive_fraction)
        num_positive = torch.bincount(image_index[positive], minlength=num_images).clamp(max=max_positive)
        num_negative = torch.bincount(image_index[negative], minlength=num_images)
        num_negative = torch.minimum(num_negative, self.batch_size_per_image - num_positive)
        return (_random_subset(positive, image_index, num_positive, num_images),
                _random_subset(negative, image_index, num_negative, num_images))


def _random_subset(mask: torch.Tensor, image_index: torch.Tensor, counts: torch.Tensor,
                   num_images: int) -> torch.Tensor:
    """(N,) bool: counts[i] elements of `mask` from image i, uniformly at random."""
    candidates = torch.nonzero(mask).squeeze(1)
    candidates = candidates[torch.randperm(len(candidates), device=mask.device)]
    chosen = candidates[first_k_per_group(image_index[candidates], counts, num_images)]
    sampled = torch.zeros_like(mask)
    sampled[chosen] = True
    return sampled
