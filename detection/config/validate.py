"""The key combinations `load_config` checks after merging (`validate_config`); every rule that
is not a single key's type lives here or in the builder that reads the key (see loader.py)."""

from __future__ import annotations

import os
import warnings

from yacs.config import CfgNode

from detection.utils.cli import UsageError

AMP_DTYPES = ("bfloat16", "float16")
OPTIMIZERS = ("SGD", "AdamW")
LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")


class ConfigError(UsageError):
    """An invalid configuration; `str(err)` is the message to show the user, no traceback."""


class ConfigWarning(UserWarning):
    """A configuration that is legal but probably not what was meant."""


def world_size_from_env() -> int:
    """WORLD_SIZE (torchrun sets it), 1 without it or when it is not a number."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def config_problems(cfg: CfgNode, world_size: int | None = None) -> list[str]:
    """Every invalid key combination of `cfg` not already checked by the model builders, one
    message each naming the keys; `world_size` None skips the per-process batch checks."""
    problems: list[str] = []
    m, s = cfg.MODEL, cfg.SOLVER
    rh = m.ROI_HEADS
    if rh.OHEM and rh.OHEM_BATCH_SIZE_PER_IMAGE > rh.BATCH_SIZE_PER_IMAGE:
        problems.append(
            f"MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE ({rh.OHEM_BATCH_SIZE_PER_IMAGE}) must not "
            f"exceed MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE ({rh.BATCH_SIZE_PER_IMAGE}): OHEM keeps "
            f"the hardest of the sampled RoIs"
        )
    if s.AMP.DTYPE not in AMP_DTYPES:
        problems.append(f"SOLVER.AMP.DTYPE must be one of {AMP_DTYPES}, got {s.AMP.DTYPE!r}")
    if s.OPTIMIZER not in OPTIMIZERS:
        problems.append(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {s.OPTIMIZER!r}")
    if len(s.BETAS) != 2 or not all(0.0 <= b < 1.0 for b in s.BETAS):
        problems.append(f"SOLVER.BETAS must be two values in [0, 1), got {tuple(s.BETAS)}")
    if s.LR_SCHEDULER_NAME not in LR_SCHEDULERS:
        problems.append(
            f"SOLVER.LR_SCHEDULER_NAME must be one of {LR_SCHEDULERS}, got {s.LR_SCHEDULER_NAME!r}"
        )
    if not 0.0 <= s.BASE_LR_END <= s.BASE_LR:
        problems.append(
            f"SOLVER.BASE_LR_END must be in [0, SOLVER.BASE_LR ({s.BASE_LR})], got {s.BASE_LR_END}"
        )
    for key in ("MAX_ITER", "CHECKPOINT_PERIOD", "LOG_PERIOD"):
        if s[key] <= 0:
            problems.append(f"SOLVER.{key} must be positive, got {s[key]}")
    for key in ("SAVE_PERIOD", "TEST_PERIOD", "CLIP_GRAD_NORM", "SKIP_NONFINITE_STEPS"):
        if s[key] < 0:
            problems.append(f"SOLVER.{key} must be >= 0, got {s[key]}")
    inp = cfg.INPUT
    if any(
        isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0
        for f in inp.BATCH_SCALES_TRAIN
    ):
        problems.append(
            f"INPUT.BATCH_SCALES_TRAIN must hold positive factors, got {tuple(inp.BATCH_SCALES_TRAIN)}"
        )
    if not 0.0 < inp.BATCH_SCALES_UNTIL <= 1.0:
        problems.append(f"INPUT.BATCH_SCALES_UNTIL must be in (0, 1], got {inp.BATCH_SCALES_UNTIL}")
    steps = list(s.STEPS)
    if any(not isinstance(x, int) or isinstance(x, bool) or x <= 0 for x in steps):
        problems.append(f"SOLVER.STEPS must be positive iterations, got {tuple(steps)}")
    elif any(b <= a for a, b in zip(steps, steps[1:])):
        problems.append(f"SOLVER.STEPS must be strictly increasing, got {tuple(steps)}")
    if world_size is not None:
        for key, total in (
            ("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH),
            ("TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH),
        ):
            if total <= 0 or total % world_size:
                problems.append(
                    f"{key} ({total}) must be a positive multiple of the world size "
                    f"({world_size} processes)"
                )
    return problems


def validate_config(cfg: CfgNode, world_size: int | None = None) -> None:
    """Raise a ConfigError listing every invalid combination (see `config_problems`); warn with
    a ConfigWarning when the multi-step schedule's SOLVER.STEPS go beyond SOLVER.MAX_ITER (those
    drops never happen)."""
    problems = config_problems(cfg, world_size)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        return
    late = [x for x in cfg.SOLVER.STEPS if x >= cfg.SOLVER.MAX_ITER]
    if late:
        warnings.warn(
            f"SOLVER.STEPS {tuple(late)} are at or beyond SOLVER.MAX_ITER ({cfg.SOLVER.MAX_ITER}):"
            f" those learning-rate drops never happen",
            ConfigWarning,
            stacklevel=2,
        )
