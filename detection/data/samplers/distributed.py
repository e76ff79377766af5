"""Sharding of a dataset's indices across ranks, reproducible from (seed, epoch)."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class DistributedSampler(Sampler[int]):
    """The indices of rank `rank` out of `num_replicas` (world size 1 is plain (shuffled) order).

    shuffle=True (training): a permutation drawn from a generator seeded with `seed + epoch`
    (call `set_epoch`), padded by repeating indices so every rank gets the same count, then
    strided: rank r takes positions r, r + R, ...
    shuffle=False (inference): contiguous, disjoint shards that together cover every index once
    (no padding; shard lengths differ by at most one).
    """

    def __init__(
        self,
        dataset,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if num_replicas is None:
            num_replicas = (
                dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
            )
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.dataset_len = len(dataset)
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        if shuffle:
            self.num_samples = int(math.ceil(self.dataset_len / num_replicas))
        else:
            self.begin = self.dataset_len * rank // num_replicas
            self.end = self.dataset_len * (rank + 1) // num_replicas
            self.num_samples = self.end - self.begin

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.begin, self.end))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        indices = torch.randperm(self.dataset_len, generator=g).tolist()
        total = self.num_samples * self.num_replicas
        while len(indices) < total:
            indices += indices[: total - len(indices)]
        return iter(indices[self.rank : total : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
