"""Learning-rate schedule: warmup (linear or constant) then multi-step decay."""

from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

import torch


def warmup_multistep_factor(
    iteration: int,
    milestones: Sequence[int],
    gamma: float,
    warmup_factor: float,
    warmup_iters: int,
    warmup_method: str,
) -> float:
    """The multiplier of the base learning rate at `iteration` (0-based).

    During warmup (`iteration < warmup_iters`) it is `warmup_factor` ("constant") or goes linearly
    from `warmup_factor` at iteration 0 to 1 at `warmup_iters` ("linear"); it is then multiplied by
    `gamma ** k`, k the number of milestones <= iteration.
    """
    warm = 1.0
    if iteration < warmup_iters:
        if warmup_method == "constant":
            warm = warmup_factor
        elif warmup_method == "linear":
            alpha = iteration / warmup_iters
            warm = warmup_factor * (1 - alpha) + alpha
        else:
            raise ValueError(
                f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}"
            )
    return warm * gamma ** bisect_right(list(milestones), iteration)


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration schedule `lr_g = base_lr_g * warmup_multistep_factor(it, ...)`.

    Step it once per iteration after `optimizer.step()`; `last_epoch` counts iterations. Its
    `state_dict()` holds the iteration count, so a resumed run continues the same schedule.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_factor: float = 1.0 / 3,
        warmup_iters: int = 500,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {tuple(milestones)}")
        if warmup_method not in ("constant", "linear"):
            raise ValueError(
                f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}"
            )
        if warmup_iters < 0:
            raise ValueError(f"SOLVER.WARMUP_ITERS must be >= 0, got {warmup_iters}")
        self.milestones = [int(m) for m in milestones]
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = warmup_multistep_factor(
            self.last_epoch,
            self.milestones,
            self.gamma,
            self.warmup_factor,
            self.warmup_iters,
            self.warmup_method,
        )
        return [base_lr * factor for base_lr in self.base_lrs]

    _get_closed_form_lr = get_lr
