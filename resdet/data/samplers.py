"""Samplers: the endless sharded training order (resumable at any batch), sharded inference order.

The training order is a pure function of (seed, epoch): epoch e's permutation is drawn from a generator
seeded with (seed, e) alone, so a run resumed at batch b produces exactly the batches an uninterrupted run
produces from b on, without replaying the data. Each sample carries its epoch (`SampleKey`), from which the
dataset derives that sample's augmentation randomness.
"""
from typing import Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    """One draw of the training order: the dataset index and the epoch it was drawn in (unique per run)."""

    index: int
    epoch: int


class TrainingSampler(Sampler):
    """Endless indices: each epoch one permutation (the same on every rank), rank r takes perm[r::world_size].

    The shards of one epoch are therefore disjoint and together cover the dataset. `keys(start)` gives the same
    stream as SampleKeys, from position `start` of this rank's stream, in O(epoch) time.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if size <= 0:
            raise ValueError(f"TrainingSampler: the dataset is empty (size {size})")
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.shard_size = len(range(rank, size, world_size))  # this rank's samples per epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's shard of epoch `epoch`'s permutation, (shard_size,) int64."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size) if self.shuffle else \
            np.arange(self.size)
        return order[self.rank::self.world_size]

    def keys(self, start: int = 0) -> Iterator[SampleKey]:
        """This rank's endless stream of SampleKeys, from its position `start` (0: the beginning)."""
        epoch, offset = divmod(start, self.shard_size)
        while True:
            for index in self.epoch_order(epoch)[offset:]:  # no list: 10^6 Python ints per epoch otherwise
                yield SampleKey(int(index), epoch)
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[int]:
        return (key.index for key in self.keys())


class TrainingBatchSampler(Sampler):
    """Endless batches (lists of SampleKeys) of `batch_size` from a TrainingSampler, from batch `start` on.

    With `group_ids`, a batch holds one group only (e.g. 0 landscape, 1 portrait): each group fills its own
    bucket in stream order and a full bucket is the next batch. Ungrouped batches start in O(epoch) time;
    grouped ones replay the index stream (no data) up to `start`, about 0.4 s per million images already trained on.
    """

    def __init__(self, sampler: TrainingSampler, batch_size: int, group_ids: Optional[Sequence[int]] = None):
        if batch_size <= 0:
            raise ValueError(f"TrainingBatchSampler: batch_size must be positive, got {batch_size}")
        self.sampler, self.batch_size = sampler, batch_size
        # an array, not a list: no object per image whose reference count the main process touches after forking
        self.group_ids = None if group_ids is None else np.asarray(group_ids, dtype=np.int64)
        self.start = 0  # batches to skip: how many an interrupted run had already trained on

    def __iter__(self) -> Iterator[List[SampleKey]]:
        if self.group_ids is None:
            return self._batches()
        batches = self._grouped_batches()
        for _ in range(self.start):
            next(batches)
        return batches

    def _batches(self) -> Iterator[List[SampleKey]]:
        keys = self.sampler.keys(self.start * self.batch_size)
        while True:
            yield [next(keys) for _ in range(self.batch_size)]

    def _grouped_batches(self) -> Iterator[List[SampleKey]]:
        buckets = {}
        for key in self.sampler.keys():
            bucket = buckets.setdefault(int(self.group_ids[key.index]), [])
            bucket.append(key)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()


class InferenceSampler(Sampler):
    """The contiguous slice [size*rank//world, size*(rank+1)//world): every index exactly once over all ranks."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.begin = size * rank // world_size
        self.end = size * (rank + 1) // world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
