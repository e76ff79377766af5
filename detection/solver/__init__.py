"""Optimizer (SGD with per-parameter lr/decay rules) and the warmup multi-step lr schedule."""

from detection.solver.build import (
    OFFSET_PARAM_KEYS,
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
)
from detection.solver.lr_scheduler import WarmupMultiStepLR, warmup_multistep_factor

make_optimizer = build_optimizer
make_lr_scheduler = build_lr_scheduler

__all__ = [
    "OFFSET_PARAM_KEYS",
    "WarmupMultiStepLR",
    "build_lr_scheduler",
    "build_optimizer",
    "get_param_groups",
    "make_lr_scheduler",
    "make_optimizer",
    "warmup_multistep_factor",
]
