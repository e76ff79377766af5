"""A batch sampler that runs for a fixed number of iterations, resumable at any iteration."""

from __future__ import annotations

from typing import Iterator, List

from torch.utils.data import BatchSampler


class IterationBasedBatchSampler(BatchSampler):
    """Re-iterate `batch_sampler` (one pass = one epoch) until `num_iterations` batches.

    Before epoch e the inner sampler gets `set_epoch(e)` (when it has one), so the order of every
    epoch is a function of (seed, e). Starting at `start_iter = k` replays the epochs' index
    orders without yielding and then yields exactly the batches k, k+1, ... of an uninterrupted
    run. `len()` is `num_iterations` (the iteration count the run ends at, as in
    maskrcnn-benchmark); `num_iterations - start_iter` batches are yielded.
    """

    def __init__(
        self, batch_sampler: BatchSampler, num_iterations: int, start_iter: int = 0
    ) -> None:
        if num_iterations < 0 or not 0 <= start_iter:
            raise ValueError(
                f"need num_iterations >= 0 and start_iter >= 0, got {num_iterations}, {start_iter}"
            )
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def _set_epoch(self, epoch: int) -> None:
        for obj in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            if obj is not None and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def __iter__(self) -> Iterator[List[int]]:
        iteration, epoch = 0, 0
        while iteration < self.num_iterations:
            self._set_epoch(epoch)
            produced = 0
            for batch in self.batch_sampler:
                produced += 1
                if iteration >= self.start_iter:
                    yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return
            if produced == 0:
                raise RuntimeError("the batch sampler produced no batch (empty dataset?)")
            epoch += 1

    def __len__(self) -> int:
        return self.num_iterations
