"""Training logs: the console/file logger, log/metrics.jsonl and TensorBoard, written on rank 0."""

from __future__ import annotations

import json
import logging
import os
import resource
from typing import Any

import torch

from detection.engine.train_loop import HookBase, StepState
from detection.utils import comm
from detection.utils.metric_logger import MetricLogger
from detection.utils.timer import format_seconds


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA max_memory_allocated, or the CPU max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class TrainLog:
    """Rank-0 outputs: log/metrics.jsonl (one JSON record per line) and TensorBoard scalars."""

    def __init__(self, log_dir: str, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        self.jsonl = os.path.join(log_dir, "metrics.jsonl")
        if enabled:
            # imported here: tensorboard takes seconds to import and only rank 0 of a run
            # that trains needs it
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log_dir)

    def write(self, record: dict[str, Any], tb_prefix: str = "train/") -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["iter"]
        for key, value in record.items():
            if key not in ("iter", "type") and isinstance(value, (int, float)):
                self.writer.add_scalar(tb_prefix + key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class LoggingHook(HookBase):
    """Smoothed losses and timings every `log_period` iterations, at the first and the last:
    a console line (eta, losses, lr, peak memory, skipped steps) and a "train" record in
    metrics.jsonl / TensorBoard. `log` (a TrainLog) is shared with the evaluation hook."""

    def __init__(
        self, log: TrainLog, log_period: int, base_lr: float, logger: logging.Logger
    ) -> None:
        self.log = log
        self.log_period = log_period
        self.base_lr = base_lr
        self.logger = logger
        self.meters = MetricLogger(delimiter="  ")

    def before_train(self, loop) -> None:
        if loop.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(loop.device)

    def after_step(self, loop, state: StepState) -> None:
        if state.problem is None:
            reduced = comm.reduce_dict(state.loss_dict)
            self.meters.update(loss=sum(reduced.values()), **reduced)
        self.meters.update(time=state.batch_time, data=state.data_time)
        it = state.it
        if it % self.log_period == 0 or it == state.max_iter or it == state.start_iter + 1:
            self._write(it, state, loop.device)

    def _write(self, it: int, state: StepState, device: torch.device) -> None:
        meters = self.meters
        eta = meters.time.global_avg * (state.max_iter - it)
        mem = peak_memory_mb(device)
        lr = state.lr_factor * self.base_lr
        skipped = state.skipped_total
        self.logger.info(
            "eta: %s  iter: %d/%d  %s  lr: %.6f  max mem: %.0f MB%s",
            format_seconds(eta),
            it,
            state.max_iter,
            str(meters),
            lr,
            mem,
            f"  skipped steps: {skipped}" if skipped else "",
        )
        record: dict[str, Any] = {"type": "train", "iter": it}
        for name, meter in meters.meters.items():
            record[name] = meter.median
            if name not in ("time", "data"):
                record[name + "_avg"] = meter.global_avg
        record.update(lr=lr, eta_seconds=eta, max_mem_mb=mem, skipped_steps=skipped)
        self.log.write(record)

    def after_train(self, loop) -> None:
        self.log.close()
