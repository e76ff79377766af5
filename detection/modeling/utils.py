"""Small helpers shared by the model components."""

from __future__ import annotations

from typing import List

import torch


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
