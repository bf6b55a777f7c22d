"""Anchors: a few boxes per cell of each feature level, shifted over the level's grid.

Order, which the RPN head's channels follow (channel a of a cell predicts anchor a):
- within a cell, anchors run over aspect ratios (outer) then sizes (inner): a = ratio_index * len(sizes) + size_index,
  as in torchvision and the original Detectron (detectron2 runs sizes outer; its converter permutes multi-size levels);
- within a level, cells run row-major (y outer, x inner), the A anchors of a cell together;
- levels are concatenated in the order of the features.
"""
from collections import OrderedDict
from typing import List, Sequence, Tuple

import torch
from torch import nn

_CACHE_ENTRIES = 32  # grids of recently seen feature sizes (multi-scale training sees a few dozen)


def _per_level(values: Sequence, num_levels: int, key: str) -> List[List[float]]:
    """One list per level: a single list is shared by every level."""
    values = [list(v) if isinstance(v, (list, tuple)) else [v] for v in values]
    if len(values) == 1:
        return values * num_levels
    if len(values) != num_levels:
        raise ValueError(f"{key}: {len(values)} lists for {num_levels} feature levels; give one or one per level")
    return values


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], round_to_int: bool) -> torch.Tensor:
    """(len(ratios) * len(sizes), 4) boxes centred on 0; ratio = height / width, area = size^2."""
    sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
    height_ratios = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=torch.float32))
    widths = ((1 / height_ratios)[:, None] * sizes_t[None, :]).reshape(-1)
    heights = (height_ratios[:, None] * sizes_t[None, :]).reshape(-1)
    anchors = torch.stack([-widths, -heights, widths, heights], dim=1) / 2
    return anchors.round() if round_to_int else anchors


class AnchorGenerator(nn.Module):
    """Anchors of every feature level for a padded batch, cached per (level, grid size, stride)."""

    def __init__(self, sizes: Sequence, aspect_ratios: Sequence, strides: Sequence[int], offset: float = 0.0,
                 round_cell_anchors: bool = False, stride_from_image: bool = False):
        super().__init__()
        num_levels = len(strides)
        sizes = _per_level(sizes, num_levels, "MODEL.ANCHOR_GENERATOR.SIZES")
        aspect_ratios = _per_level(aspect_ratios, num_levels, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS")
        self.strides = list(strides)
        self.offset = offset
        # torchvision's stride is padded image side // feature side, which differs from the nominal
        # stride on levels whose side was rounded up (P6 of an 800-pixel side: 800 // 13 = 61)
        self.stride_from_image = stride_from_image
        self.num_anchors = [len(s) * len(r) for s, r in zip(sizes, aspect_ratios)]
        for level, (level_sizes, level_ratios) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(f"cell_anchors_{level}", cell_anchors(level_sizes, level_ratios, round_cell_anchors),
                                 persistent=False)
        self._cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

    @classmethod
    def from_config(cls, cfg, strides: Sequence[int]) -> "AnchorGenerator":
        """Build from cfg.MODEL.ANCHOR_GENERATOR for features of the given strides."""
        a = cfg.MODEL.ANCHOR_GENERATOR
        return cls(a.SIZES, a.ASPECT_RATIOS, strides, a.OFFSET, a.ROUND_CELL_ANCHORS, a.STRIDE_FROM_IMAGE)

    def _level_strides(self, grid_sizes: List[Tuple[int, int]], image_shape: Tuple[int, int]) -> List[Tuple[int, int]]:
        if self.stride_from_image:
            return [(image_shape[0] // h, image_shape[1] // w) for h, w in grid_sizes]
        return [(s, s) for s in self.strides]

    def grid_anchors(self, level: int, grid_size: Tuple[int, int], stride: Tuple[int, int]) -> torch.Tensor:
        """(H*W*A, 4) anchors of one level: the cell anchors shifted to every grid position."""
        cell = getattr(self, f"cell_anchors_{level}")  # (A, 4)
        if torch.compiler.is_exporting():  # an exported graph's grid sizes are symbols, which cannot key the cache
            return self._shifted(cell, grid_size, stride)
        key = (level, tuple(grid_size), tuple(stride), cell.device, cell.dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        anchors = self._shifted(cell, grid_size, stride)
        self._cache[key] = anchors
        if len(self._cache) > _CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return anchors

    def _shifted(self, cell: torch.Tensor, grid_size: Tuple[int, int], stride: Tuple[int, int]) -> torch.Tensor:
        height, width = grid_size
        shifts_x = (torch.arange(width, dtype=cell.dtype, device=cell.device) + self.offset) * stride[1]
        shifts_y = (torch.arange(height, dtype=cell.dtype, device=cell.device) + self.offset) * stride[0]
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        return (shifts + cell[None]).reshape(-1, 4)

    def forward(self, features: List[torch.Tensor], image_shape: Tuple[int, int]) -> List[torch.Tensor]:
        """Anchors per level, (H_l*W_l*A_l, 4) each, for feature maps of a batch padded to image_shape."""
        if len(features) != len(self.strides):
            raise ValueError(f"AnchorGenerator: {len(features)} feature maps for {len(self.strides)} levels")
        grid_sizes = [tuple(f.shape[-2:]) for f in features]
        strides = self._level_strides(grid_sizes, image_shape)
        return [self.grid_anchors(level, grid, stride) for level, (grid, stride) in enumerate(zip(grid_sizes, strides))]

