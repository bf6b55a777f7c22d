"""Box helpers shared by the RPN and the RoI heads: flattened per-batch boxes, clipping, size filters."""
from typing import List, NamedTuple, Tuple

import torch
import torchvision

from ...layers import nms


class Proposals(NamedTuple):
    """Region proposals of a whole batch, flattened: image `image_index[i]` owns box i."""

    boxes: torch.Tensor  # (R, 4) x1y1x2y2 in the padded-batch pixels
    # (R,) objectness probabilities, sigmoid of the RPN logits: they saturate to exactly 1.0 in fp32 above a logit
    # of ~16.6, so the order of the rows within an image (MODEL.RPN.RANK_BY), not these values, is the ranking
    scores: torch.Tensor
    image_index: torch.Tensor  # (R,) int64, non-decreasing


def flatten_per_image(tensors: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-image tensors and return them with the image index of each row."""
    counts = torch.tensor([len(t) for t in tensors], device=tensors[0].device)
    image_index = torch.repeat_interleave(torch.arange(len(tensors), device=counts.device), counts)
    return torch.cat(tensors), image_index


def clip_boxes(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]; image_sizes (..., 2) as (height, width) broadcasts."""
    width_height = image_sizes.flip(-1).to(boxes.dtype)
    upper = torch.cat([width_height, width_height], dim=-1)  # (..., 4) as (w, h, w, h)
    return torch.minimum(boxes.clamp(min=0), upper)


def boxes_at_least(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """(N,) bool: both sides of the box are >= min_size (zero keeps empty boxes too)."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


def nonempty_boxes_at_least(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """(N,) bool: both sides are > 0 and >= min_size, so an empty box never passes, whatever min_size."""
    sides = torch.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
    return (sides > 0) & (sides >= min_size)


def first_k_per_group(group: torch.Tensor, k, num_groups: int) -> torch.Tensor:
    """(N,) bool keeping the first k (int, or (num_groups,) tensor) elements of each group, in the given order."""
    order = stable_argsort(group)
    sorted_group = group[order]
    counts = torch.bincount(group, minlength=num_groups)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(group.shape[0], device=group.device) - starts[sorted_group]  # shape, not len(): symbolic
    limit = torch.as_tensor(k, device=group.device).expand(num_groups)
    keep = torch.zeros_like(group, dtype=torch.bool)
    keep[order] = rank < limit[sorted_group]
    return keep


def sort_by_image(image_index: torch.Tensor) -> torch.Tensor:
    """Indices grouping rows by image while keeping their order inside each image."""
    return stable_argsort(image_index)


def stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """torch.argsort(keys, stable=True) of (N,) non-negative integers, as an argsort of the unique keys
    key * N + position, because ONNX has no stable sort."""
    positions = torch.arange(keys.shape[0], device=keys.device)
    return torch.argsort(keys * keys.shape[0] + positions)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms, its per-group calls threaded on the CPU (nms.batched_nms); in an exported graph,
    the coordinate-offset strategy it uses for few boxes."""
    if not torch.compiler.is_exporting():
        return nms.batched_nms(boxes, scores, groups, iou_threshold)
    # torchvision picks its strategy by the number of boxes, which a graph does not know: offsetting each group
    # beyond the others' coordinates lets one NMS keep the groups apart; the appended 0 gives an empty input a max
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes) * (max_coordinate + 1)
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)
