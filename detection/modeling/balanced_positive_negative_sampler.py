"""Sample a fixed-size batch of positives and negatives per image."""

from __future__ import annotations

from typing import List, Tuple

import torch


class BalancedPositiveNegativeSampler:
    """Pick `batch_size_per_image` elements with at most `positive_fraction` positives.

    Labels per element: `1` (or any value >= 1) positive, `0` negative, `-1` ignored. Negatives
    fill what positives leave; random choice uses the global torch generator.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image <= 0:
            raise ValueError(f"batch_size_per_image must be positive, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(
        self, matched_idxs: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per image `Tensor[P]` labels in; per image uint8 masks (positives, negatives) out."""
        pos_masks, neg_masks = [], []
        for labels in matched_idxs:
            positive = torch.nonzero(labels >= 1).squeeze(1)
            negative = torch.nonzero(labels == 0).squeeze(1)
            num_pos = int(self.batch_size_per_image * self.positive_fraction)
            num_pos = min(positive.numel(), num_pos)
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
            perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
            pos_mask = torch.zeros_like(labels, dtype=torch.bool)
            neg_mask = torch.zeros_like(labels, dtype=torch.bool)
            pos_mask[positive[perm1]] = True
            neg_mask[negative[perm2]] = True
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
