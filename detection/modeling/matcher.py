"""Assign each prediction (anchor / proposal) to its best ground-truth box by IoU."""

from __future__ import annotations

import torch


class Matcher:
    """Matching from an IoU matrix `Tensor[G, P]` (ground truth x predictions).

    `__call__` returns `Tensor[P]` int64: the matched ground-truth index (>= 0) when the best IoU
    is `>= high_threshold`, `BELOW_LOW_THRESHOLD` (-1) when it is `< low_threshold` and
    `BETWEEN_THRESHOLDS` (-2) in between. With `allow_low_quality_matches`, every prediction
    that ties for the highest IoU of some ground-truth box is matched to it even below
    `high_threshold` (Faster R-CNN's rule that each GT gets at least one anchor). With no ground
    truth (G = 0) every prediction is BELOW_LOW_THRESHOLD.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False
    ) -> None:
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> torch.Tensor:
        if match_quality_matrix.ndim != 2:
            raise ValueError("match_quality_matrix must be Tensor[G, P]")
        num_gt, num_pred = match_quality_matrix.shape
        if num_gt == 0:
            return torch.full(
                (num_pred,),
                self.BELOW_LOW_THRESHOLD,
                dtype=torch.int64,
                device=match_quality_matrix.device,
            )
        matched_vals, matches = match_quality_matrix.max(dim=0)
        all_matches = matches.clone()
        matches[matched_vals < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            best_per_gt, _ = match_quality_matrix.max(dim=1)
            # predictions tied with a GT's best IoU (> 0 so that empty overlaps do not match)
            ties = (match_quality_matrix == best_per_gt[:, None]) & (best_per_gt[:, None] > 0)
            pred_idx = ties.any(dim=0).nonzero().squeeze(1)
            matches[pred_idx] = all_matches[pred_idx]
        return matches
