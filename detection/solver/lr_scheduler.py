"""Learning-rate schedules: warmup (linear or constant), then multi-step or cosine decay."""

from __future__ import annotations

from bisect import bisect_right
import math
from typing import Sequence

import torch


def warmup_factor_at(
    iteration: int, warmup_factor: float, warmup_iters: int, warmup_method: str
) -> float:
    """The warmup multiplier at `iteration` (0-based): 1 from `warmup_iters` on; before, it is
    `warmup_factor` ("constant") or goes linearly from `warmup_factor` at iteration 0 towards 1
    ("linear")."""
    if warmup_method not in ("constant", "linear"):
        raise ValueError(
            f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}"
        )
    if iteration >= warmup_iters:
        return 1.0
    if warmup_method == "constant":
        return warmup_factor
    alpha = iteration / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


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
    warm = warmup_factor_at(iteration, warmup_factor, warmup_iters, warmup_method)
    return warm * gamma ** bisect_right(list(milestones), iteration)


def warmup_cosine_factor(
    iteration: int,
    max_iter: int,
    end_factor: float,
    warmup_factor: float,
    warmup_iters: int,
    warmup_method: str,
) -> float:
    """The multiplier of the base learning rate at `iteration` (0-based) for a cosine decay from
    1 at iteration 0 to `end_factor` at `max_iter` (held there after), times the warmup
    multiplier of `warmup_factor_at` (detectron2's WarmupCosineLR, with an end value)."""
    warm = warmup_factor_at(iteration, warmup_factor, warmup_iters, warmup_method)
    progress = min(iteration, max_iter) / max_iter
    return warm * (end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * progress)))


class _WarmupLR(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration schedule `lr_g = base_lr_g * self.factor(it)`: the warmup keys checked and
    kept here, the decay in the subclass's `factor`. Step it once per iteration after
    `optimizer.step()`; `last_epoch` counts iterations, and `state_dict()` holds that count, so a
    resumed run continues the same schedule."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_factor: float,
        warmup_iters: int,
        warmup_method: str,
        last_epoch: int,
    ) -> None:
        warmup_factor_at(0, warmup_factor, warmup_iters, warmup_method)  # checks the method
        if warmup_iters < 0:
            raise ValueError(f"SOLVER.WARMUP_ITERS must be >= 0, got {warmup_iters}")
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        factor = self.factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    _get_closed_form_lr = get_lr


class WarmupMultiStepLR(_WarmupLR):
    """`lr_g = base_lr_g * warmup_multistep_factor(it, ...)`, stepped per iteration."""

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
        self.milestones = [int(m) for m in milestones]
        self.gamma = gamma
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method, last_epoch)

    def factor(self, iteration: int) -> float:
        return warmup_multistep_factor(
            iteration,
            self.milestones,
            self.gamma,
            self.warmup_factor,
            self.warmup_iters,
            self.warmup_method,
        )


class WarmupCosineLR(_WarmupLR):
    """`lr_g = base_lr_g * warmup_cosine_factor(it, ...)`, stepped per iteration, with
    `end_factor = base_lr_end / base_lr` shared by all groups (so a group with twice the base
    rate also ends at twice the end rate)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        end_factor: float = 0.0,
        warmup_factor: float = 1.0 / 3,
        warmup_iters: int = 500,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be positive, got {max_iter}")
        if not 0.0 <= end_factor <= 1.0:
            raise ValueError(
                f"SOLVER.BASE_LR_END must be in [0, SOLVER.BASE_LR], got a ratio of {end_factor}"
            )
        self.max_iter = max_iter
        self.end_factor = end_factor
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method, last_epoch)

    def factor(self, iteration: int) -> float:
        return warmup_cosine_factor(
            iteration,
            self.max_iter,
            self.end_factor,
            self.warmup_factor,
            self.warmup_iters,
            self.warmup_method,
        )
