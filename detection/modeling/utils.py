"""Small helpers shared by the model components."""

from __future__ import annotations

from typing import Iterable, List

import torch
from torch import nn


def cat(tensors: List[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """`torch.cat` that skips the copy for a single tensor."""
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def smooth_l1_loss(
    input: torch.Tensor, target: torch.Tensor, beta: float = 1.0, size_average: bool = True
) -> torch.Tensor:
    """Smooth L1 (Huber / beta) summed over the last dimension; mean or sum over the rest.

    `0.5 * d^2 / beta` for `|d| < beta`, else `|d| - 0.5 * beta`; beta 0 gives plain L1.
    """
    n = torch.abs(input - target)
    if beta > 0:
        loss = torch.where(n < beta, 0.5 * n**2 / beta, n - 0.5 * beta)
    else:
        loss = n
    return loss.mean() if size_average else loss.sum()


def zero_connected(*sources: Iterable) -> torch.Tensor:
    """A scalar 0 that depends on every tensor / parameter of every module in `sources`.

    Losses that do not apply in a step (no positives, no ground truth) return this, so backward
    still reaches the parameters that produced them (DistributedDataParallel needs that).
    """
    total = None
    for src in sources:
        items = src.parameters() if isinstance(src, nn.Module) else src
        if isinstance(items, torch.Tensor):
            items = [items]
        for t in items:
            if t.requires_grad:
                term = t.sum() * 0.0
                total = term if total is None else total + term
    if total is None:
        raise ValueError("zero_connected needs at least one tensor that requires grad")
    return total
