"""Samplers: inference shards cover the set once, training shards are disjoint per epoch, grouped batches,
batches resumed at any position equal the uninterrupted stream."""
import itertools

import pytest

from resdet.data.samplers import InferenceSampler, SampleKey, TrainingBatchSampler, TrainingSampler


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
    batches = list(itertools.islice(iter(TrainingBatchSampler(TrainingSampler(30, 0), 4, groups)), 20))
    assert all(len(b) == 4 and len({groups[key.index] for key in b}) == 1 for b in batches)
    assert {groups[b[0].index] for b in batches} == {True, False}


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("rank", [0, 1])
def test_batches_resume_at_any_position(grouped, rank):
    """Starting at batch b gives the uninterrupted stream's batches from b on (across epoch boundaries:
    11 images per epoch and shard, 3 per batch); each key names its epoch, and an epoch's keys are distinct."""
    groups = [i % 4 == 0 for i in range(23)] if grouped else None

    def batches(start, count):
        sampler = TrainingBatchSampler(TrainingSampler(23, seed=7, rank=rank, world_size=2), 3, groups)
        sampler.start = start
        return list(itertools.islice(iter(sampler), count))

    uninterrupted = batches(0, 30)
    for start in (1, 4, 11, 17):
        assert batches(start, 30 - start) == uninterrupted[start:], start
    keys = [key for batch in uninterrupted for key in batch]
    assert all(isinstance(key, SampleKey) for key in keys)
    first_epoch = [key.index for key in keys if key.epoch == 0]
    assert len(first_epoch) == len(set(first_epoch)) and max(key.epoch for key in keys) >= 3
