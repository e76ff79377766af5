"""Batches whose images share an aspect-ratio group (less padding in an ImageList)."""

from __future__ import annotations

from typing import Dict, Iterator, List, Sequence

from torch.utils.data import BatchSampler, Sampler


class GroupedBatchSampler(BatchSampler):
    """Batches of `batch_size` indices of one group, in the order the sampler yields them.

    Indices are buffered per group; a batch is emitted as soon as its group's buffer is full.
    At the end of the pass the incomplete buffers are emitted too, unless `drop_uneven`.
    The batches depend only on the sampler's order, so a seeded sampler gives seeded batches.

    Args:
        sampler: yields dataset indices.
        group_ids: `group_ids[i]` is the group of dataset index i (e.g. 0: w >= h, 1: h > w).
        batch_size: images per batch.
        drop_uneven: drop the incomplete batches of the end of a pass.
    """

    def __init__(
        self, sampler: Sampler, group_ids: Sequence[int], batch_size: int, drop_uneven: bool = False
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.drop_uneven = drop_uneven

    def __iter__(self) -> Iterator[List[int]]:
        buffers: Dict[int, List[int]] = {}
        for idx in self.sampler:
            buf = buffers.setdefault(self.group_ids[idx], [])
            buf.append(idx)
            if len(buf) == self.batch_size:
                yield buf
                buffers[self.group_ids[idx]] = []
        if not self.drop_uneven:
            for buf in buffers.values():
                if buf:
                    yield buf

    def __len__(self) -> int:
        counts: Dict[int, int] = {}
        for idx in self.sampler:
            counts[self.group_ids[idx]] = counts.get(self.group_ids[idx], 0) + 1
        if self.drop_uneven:
            return sum(c // self.batch_size for c in counts.values())
        return sum(-(-c // self.batch_size) for c in counts.values())
