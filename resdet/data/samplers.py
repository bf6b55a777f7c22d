"""Samplers: infinite sharded training order, sharded inference order, aspect-ratio grouped batches."""
from typing import Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


class TrainingSampler(Sampler):
    """Endless indices: each epoch one permutation (the same on every rank), rank r takes perm[r::world_size].

    The shards of one epoch are therefore disjoint and together cover the dataset.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if size <= 0:
            raise ValueError(f"TrainingSampler: the dataset is empty (size {size})")
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
            yield from order[self.rank::self.world_size].tolist()


class InferenceSampler(Sampler):
    """The contiguous slice [size*rank//world, size*(rank+1)//world): every index exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.begin = size * rank // world_size
        self.end = size * (rank + 1) // world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin


class GroupedBatchSampler(Sampler):
    """Batches whose indices share a group id (e.g. 0 landscape, 1 portrait), drawn from `sampler` in order."""

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int):
        self.sampler, self.group_ids, self.batch_size = sampler, list(group_ids), batch_size

    def __iter__(self) -> Iterator[List[int]]:
        buckets = {}
        for index in self.sampler:
            bucket = buckets.setdefault(self.group_ids[index], [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
