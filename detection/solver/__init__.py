"""Optimizer (SGD or AdamW, with per-parameter lr/decay rules) and the warmup multi-step or
cosine lr schedules."""

from detection.solver.build import (
    OFFSET_PARAM_KEYS,
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
)
from detection.solver.lr_scheduler import (
    WarmupCosineLR,
    WarmupMultiStepLR,
    warmup_cosine_factor,
    warmup_multistep_factor,
)

make_optimizer = build_optimizer
make_lr_scheduler = build_lr_scheduler

__all__ = [
    "OFFSET_PARAM_KEYS",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "build_lr_scheduler",
    "build_optimizer",
    "get_param_groups",
    "make_lr_scheduler",
    "make_optimizer",
    "warmup_cosine_factor",
    "warmup_multistep_factor",
]
