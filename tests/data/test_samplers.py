"""Samplers: aspect-ratio grouping, exact resume, disjoint and covering distributed shards."""

import pytest
from torch.utils.data import BatchSampler

from detection.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
)


def _runs(n_images, group_ids, batch, iters, start, seed=3, world=1, rank=0):
    sampler = DistributedSampler(range(n_images), world, rank, shuffle=True, seed=seed)
    grouped = GroupedBatchSampler(sampler, group_ids, batch)
    return list(IterationBasedBatchSampler(grouped, iters, start_iter=start))


def test_grouping_by_aspect_ratio():
    group_ids = [i % 3 == 0 for i in range(50)]
    sampler = DistributedSampler(range(50), 1, 0, shuffle=True, seed=0)
    batches = list(GroupedBatchSampler(sampler, group_ids, 4))
    for b in batches:
        assert len({group_ids[i] for i in b}) == 1, b
    assert sorted(i for b in batches for i in b) == list(range(50))  # one pass covers all
    assert len(batches) == len(GroupedBatchSampler(sampler, group_ids, 4))
    # groups of 17 and 33 images: ceil(17/4) + ceil(33/4) = 5 + 9 batches; floor: 4 + 8
    assert len(batches) == 14
    assert len(list(GroupedBatchSampler(sampler, group_ids, 4, drop_uneven=True))) == 12
    assert len(GroupedBatchSampler(sampler, group_ids, 4, drop_uneven=True)) == 12


def test_epochs_reshuffle_deterministically():
    a = _runs(10, [0] * 10, 5, 6, 0)
    assert a == _runs(10, [0] * 10, 5, 6, 0)
    epochs = [sorted(a[0] + a[1]), sorted(a[2] + a[3]), sorted(a[4] + a[5])]
    assert all(e == list(range(10)) for e in epochs)
    assert a[0:2] != a[2:4]  # a new order each epoch
    assert a != _runs(10, [0] * 10, 5, 6, 0, seed=4)


@pytest.mark.parametrize("start", [0, 1, 7, 13, 29])
def test_resume_equals_tail_of_uninterrupted_run(start):
    group_ids = [int(i % 5 < 2) for i in range(23)]
    full = _runs(23, group_ids, 3, 30, 0)
    resumed = _runs(23, group_ids, 3, 30, start)
    assert len(full) == 30
    assert resumed == full[start:]
    for world, rank in ((2, 0), (2, 1)):
        full_r = _runs(23, group_ids, 3, 30, 0, world=world, rank=rank)
        assert _runs(23, group_ids, 3, 30, start, world=world, rank=rank) == full_r[start:]


def test_iteration_sampler_len_and_plain_batches():
    sampler = DistributedSampler(range(7), 1, 0, shuffle=True, seed=0)
    it = IterationBasedBatchSampler(BatchSampler(sampler, 2, drop_last=False), 9, start_iter=4)
    assert len(it) == 9  # the iteration the run ends at
    assert len(list(it)) == 5
    with pytest.raises(RuntimeError, match="no batch"):
        list(IterationBasedBatchSampler(BatchSampler([], 2, False), 3))


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4), (12, 4)])
def test_test_shards_disjoint_and_covering(n, world):
    shards = [list(DistributedSampler(range(n), world, r, shuffle=False)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n)) and len(flat) == n  # disjoint, covering
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(
        len(DistributedSampler(range(n), world, r, shuffle=False)) == len(shards[r])
        for r in range(world)
    )


def test_train_shards_disjoint_per_epoch():
    n, world = 11, 3
    for epoch in (0, 1):
        shards = []
        for r in range(world):
            s = DistributedSampler(range(n), world, r, shuffle=True, seed=5)
            s.set_epoch(epoch)
            shards.append(list(s))
        assert all(len(s) == 4 for s in shards)  # padded to ceil(11 / 3)
        flat = [i for s in shards for i in s]
        assert set(flat) == set(range(n)) and len(flat) - len(set(flat)) == 12 - 11
    with pytest.raises(ValueError, match="rank"):
        DistributedSampler(range(3), 2, 2)
