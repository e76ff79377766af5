"""`do_train`: the training loop (`train_loop.TrainLoop`) with the standard hooks
(`detection.engine.hooks`), configured from SOLVER.* through `TrainOptions`.

Faults (see RELIABILITY.md section 4): a non-finite loss or gradient stops training with a
`NonFiniteStepError` or skips the step (SOLVER.SKIP_NONFINITE_STEPS, `hooks.NonFinitePolicy`);
non-finite weights are never checkpointed (`hooks.CheckpointHook`); SIGTERM / SIGINT stop at the
next iteration boundary after a checkpoint with `TrainingInterrupted` (`hooks.SignalHook`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Iterable

import torch
from torch import nn

from detection.engine.amp import resolve_amp_dtype
from detection.engine.checkpointer import Checkpointer
from detection.engine.hooks import (
    CheckpointHook,
    EvalHook,
    LoggingHook,
    NonFinitePolicy,
    NonFiniteStepError,
    SignalHook,
    TrainingInterrupted,
    TrainLog,
)
from detection.engine.train_loop import TrainLoop
from detection.utils import comm

__all__ = [
    "NonFiniteStepError",
    "TrainOptions",
    "TrainingInterrupted",
    "do_train",
    "resolve_amp_dtype",
]


@dataclasses.dataclass
class TrainOptions:
    """What the loop needs from the config (see SOLVER.* in detection/config/defaults.py)."""

    max_iter: int
    workspace: str
    checkpoint_period: int = 2500
    save_period: int = 0
    test_period: int = 0
    log_period: int = 20
    clip_grad_norm: float = 0.0
    skip_nonfinite_steps: int = 0  # 0 = stop at a non-finite loss/gradient, N = skip up to N
    amp_dtype: torch.dtype | None = None  # None = full precision
    cfg_yaml: str = ""

    @classmethod
    def from_config(
        cls, cfg, device: torch.device, logger: logging.Logger | None = None
    ) -> "TrainOptions":
        s = cfg.SOLVER  # checked by the config loader (`config_problems`)
        return cls(
            max_iter=s.MAX_ITER,
            workspace=cfg.WORKSPACE,
            checkpoint_period=s.CHECKPOINT_PERIOD,
            save_period=s.SAVE_PERIOD,
            test_period=s.TEST_PERIOD,
            log_period=s.LOG_PERIOD,
            clip_grad_norm=float(s.CLIP_GRAD_NORM),
            skip_nonfinite_steps=int(s.SKIP_NONFINITE_STEPS),
            amp_dtype=resolve_amp_dtype(cfg, device, logger),
            cfg_yaml=cfg.dump(),
        )


def do_train(
    model: nn.Module,
    data_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    checkpointer: Checkpointer,
    device: torch.device,
    options: TrainOptions,
    start_iter: int = 0,
    rng_state: dict[str, Any] | None = None,
    test_fn: Callable[[nn.Module, int], dict[str, dict[str, float]] | None] | None = None,
    logger: logging.Logger | None = None,
) -> None:
    """Train from `start_iter` to `options.max_iter`.

    `data_loader` yields `(images: ImageList, targets: tuple[BoxList], indices)` for iterations
    start_iter, start_iter+1, ... (built with `make_data_loader(start_iter=...)`); the model
    returns a dict of scalar losses that are summed. `rng_state` (from a checkpoint) is restored
    right after the loader's iterator is created, so a resumed run draws the same random numbers
    as an uninterrupted one. `test_fn(model, iteration)` runs every `test_period` iterations.
    Checkpoints go to WORKSPACE/model (rotated), WORKSPACE/save (milestones) and WORKSPACE/final.
    """
    logger = logger or logging.getLogger("detection.trainer")
    o = options
    log = TrainLog(os.path.join(o.workspace, "log"), enabled=comm.is_main_process())
    checkpoints = CheckpointHook(
        checkpointer,
        workspace=o.workspace,
        checkpoint_period=o.checkpoint_period,
        save_period=o.save_period,
        max_iter=o.max_iter,
        cfg_yaml=o.cfg_yaml,
    )
    # the order is the order of their work after each iteration
    hooks = [
        NonFinitePolicy(o.skip_nonfinite_steps, checkpoints.last_checkpoint, logger),
        LoggingHook(log, o.log_period, optimizer.defaults["lr"], logger),
        checkpoints,
    ]
    if test_fn is not None:
        hooks.append(EvalHook(test_fn, o.test_period, log, logger))
    hooks.append(SignalHook(checkpoints))
    TrainLoop(
        model=model,
        data_loader=data_loader,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        max_iter=o.max_iter,
        start_iter=start_iter,
        amp_dtype=o.amp_dtype,
        clip_grad_norm=o.clip_grad_norm,
        rng_state=rng_state,
        hooks=hooks,
        logger=logger,
    ).run()
