"""Periodic evaluation (SOLVER.TEST_PERIOD) during training."""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable

from torch import nn

from detection.engine.hooks.logging import TrainLog
from detection.engine.train_loop import HookBase, StepState
from detection.utils import comm
from detection.utils.seed import get_rng_state, set_rng_state


class EvalHook(HookBase):
    """Every `period` iterations: `test_fn(model, iteration)` (metrics by IoU type, or None off
    rank 0), logged and written as an "eval" record. The random streams are restored after it,
    so evaluating does not change training (a resumed run skips evaluations it already did)."""

    def __init__(
        self,
        test_fn: Callable[[nn.Module, int], dict[str, dict[str, float]] | None],
        period: int,
        log: TrainLog,
        logger: logging.Logger,
    ) -> None:
        self.test_fn = test_fn
        self.period = period
        self.log = log
        self.logger = logger

    def after_step(self, loop, state: StepState) -> None:
        if not self.period or state.it % self.period != 0:
            return
        rng_state = get_rng_state()
        metrics = self.test_fn(loop.model, state.it)
        set_rng_state(rng_state)
        comm.synchronize()
        loop.model.train()
        if not metrics:
            return
        record: dict[str, Any] = {"type": "eval", "iter": state.it}
        for iou_type, values in metrics.items():
            for name, value in values.items():
                if not math.isnan(value):
                    record[f"{iou_type}/{name}"] = value
        self.logger.info("Evaluation at iteration %d: %s", state.it, json.dumps(record))
        self.log.write(record, tb_prefix="eval/")
