"""Samplers: inference shards cover the set once, training shards are disjoint per epoch, grouped batches."""
import itertools

import pytest

from resdet.data.samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler


@pytest.mark.parametrize("size", [0, 1, 7, 10, 11])
def test_inference_shards_cover_exactly_once(size):
    shards = [list(InferenceSampler(size, rank, 2)) for rank in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(size))
    assert abs(len(shards[0]) - len(shards[1])) <= 1
    assert [len(InferenceSampler(size, rank, 2)) for rank in range(2)] == [len(s) for s in shards]


@pytest.mark.parametrize("size,world_size", [(10, 2), (11, 2), (9, 3)])
def test_training_shards_disjoint_each_epoch(size, world_size):
    streams = [iter(TrainingSampler(size, seed=5, rank=r, world_size=world_size)) for r in range(world_size)]
    per_epoch = [len(range(r, size, world_size)) for r in range(world_size)]
    permutations = []
    for _epoch in range(4):
        shards = [list(itertools.islice(stream, n)) for stream, n in zip(streams, per_epoch)]
        union = [i for shard in shards for i in shard]
        assert sorted(union) == list(range(size))  # disjoint and complete
        permutations.append(tuple(union))
    assert len(set(permutations)) > 1  # reshuffled between epochs


def test_training_sampler_seeded():
    take = lambda seed: list(itertools.islice(iter(TrainingSampler(20, seed)), 40))  # noqa: E731
    assert take(1) == take(1) and take(1) != take(2)


def test_grouped_batches_share_a_group():
    groups = [i % 3 == 0 for i in range(30)]
    batches = list(itertools.islice(iter(GroupedBatchSampler(TrainingSampler(30, 0), groups, 4)), 20))
    assert all(len(b) == 4 and len({groups[i] for i in b}) == 1 for b in batches)
    assert {groups[b[0]] for b in batches} == {True, False}
