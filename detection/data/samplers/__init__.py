"""Samplers: per-rank sharding, aspect-ratio grouped batches, iteration-based (resumable) runs."""

from detection.data.samplers.distributed import DistributedSampler
from detection.data.samplers.grouped_batch_sampler import GroupedBatchSampler
from detection.data.samplers.iteration_based_batch_sampler import IterationBasedBatchSampler

__all__ = ["DistributedSampler", "GroupedBatchSampler", "IterationBasedBatchSampler"]
