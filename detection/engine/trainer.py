"""The training loop: mixed precision, gradient clipping, logging (console, file, TensorBoard,
metrics.jsonl), periodic/milestone/final checkpoints and periodic evaluation."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import resource
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn

from detection.engine.checkpointer import Checkpointer
from detection.utils import comm
from detection.utils.metric_logger import MetricLogger
from detection.utils.seed import get_rng_state, set_rng_state
from detection.utils.timer import format_seconds

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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
    amp_dtype: torch.dtype | None = None  # None = full precision
    cfg_yaml: str = ""

    @classmethod
    def from_config(
        cls, cfg, device: torch.device, logger: logging.Logger | None = None
    ) -> "TrainOptions":
        s = cfg.SOLVER
        for key in ("MAX_ITER", "CHECKPOINT_PERIOD", "LOG_PERIOD"):
            if s[key] <= 0:
                raise ValueError(f"SOLVER.{key} must be > 0, got {s[key]}")
        for key in ("SAVE_PERIOD", "TEST_PERIOD", "CLIP_GRAD_NORM"):
            if s[key] < 0:
                raise ValueError(f"SOLVER.{key} must be >= 0, got {s[key]}")
        return cls(
            max_iter=s.MAX_ITER,
            workspace=cfg.WORKSPACE,
            checkpoint_period=s.CHECKPOINT_PERIOD,
            save_period=s.SAVE_PERIOD,
            test_period=s.TEST_PERIOD,
            log_period=s.LOG_PERIOD,
            clip_grad_norm=float(s.CLIP_GRAD_NORM),
            amp_dtype=resolve_amp_dtype(cfg, device, logger),
            cfg_yaml=cfg.dump(),
        )


def resolve_amp_dtype(
    cfg, device: torch.device, logger: logging.Logger | None = None
) -> torch.dtype | None:
    """The autocast dtype from SOLVER.AMP (None when disabled, or on CPU with a log line)."""
    amp = cfg.SOLVER.AMP
    if amp.DTYPE not in AMP_DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE must be one of {sorted(AMP_DTYPES)}, got {amp.DTYPE!r}")
    if not amp.ENABLED:
        return None
    if device.type != "cuda":
        if logger is not None:
            logger.info(
                "SOLVER.AMP.ENABLED is set but the device is %s: mixed precision disabled", device
            )
        return None
    return AMP_DTYPES[amp.DTYPE]


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA max_memory_allocated, or the CPU max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class _TrainLog:
    """Rank-0 outputs of the loop: console/file logger, TensorBoard and log/metrics.jsonl."""

    def __init__(self, log_dir: str, logger: logging.Logger, enabled: bool) -> None:
        self.logger = logger
        self.enabled = enabled
        self.writer = None
        self.jsonl = os.path.join(log_dir, "metrics.jsonl")
        if enabled:
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


def _move_targets(targets: Iterable[Any], device: torch.device) -> list[Any]:
    return [t.to(device) for t in targets]


def _check_finite(loss: torch.Tensor, loss_dict: dict[str, torch.Tensor], iteration: int) -> None:
    if not torch.isfinite(loss).all():
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        raise FloatingPointError(f"loss became non-finite at iteration {iteration}: {values}")


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
    main = comm.is_main_process()
    log = _TrainLog(os.path.join(o.workspace, "log"), logger, enabled=main)
    meters = MetricLogger(delimiter="  ")
    scaler = torch.amp.GradScaler("cuda") if o.amp_dtype == torch.float16 else None
    base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    try:
        model.train()
        data_iter = iter(data_loader)
        if rng_state is not None:
            set_rng_state(rng_state)
        logger.info("Start training: iterations %d..%d", start_iter, o.max_iter)
        train_start = end = time.perf_counter()
        for iteration in range(start_iter, o.max_iter):
            try:
                images, targets, _ = next(data_iter)
            except StopIteration:
                raise RuntimeError(
                    f"the training data loader ended at iteration {iteration} < SOLVER.MAX_ITER"
                ) from None
            data_time = time.perf_counter() - end
            it = iteration + 1
            lr_factor = optimizer.param_groups[0]["lr"] / base_lrs[0]
            loss_dict = _train_step(model, images, targets, optimizer, scaler, device, o, iteration)
            scheduler.step()
            reduced = comm.reduce_dict(loss_dict)
            total = sum(reduced.values())
            batch_time = time.perf_counter() - end
            meters.update(loss=total, **reduced)
            meters.update(time=batch_time, data=data_time)
            if it % o.log_period == 0 or it == o.max_iter or iteration == start_iter:
                _log_iteration(log, meters, it, start_iter, o, lr_factor, optimizer, device, logger)
            _save_checkpoints(checkpointer, it, o)
            if test_fn is not None and o.test_period and it % o.test_period == 0:
                _evaluate(test_fn, model, it, log, logger)
                model.train()
            end = time.perf_counter()
        total_time = time.perf_counter() - train_start
        logger.info(
            "Total training time: %s (%.4f s / it)",
            format_seconds(total_time),
            total_time / max(o.max_iter - start_iter, 1),
        )
    finally:
        log.close()


def _train_step(model, images, targets, optimizer, scaler, device, o: TrainOptions, iteration: int):
    images = images.to(device)
    targets = _move_targets(targets, device)
    autocast = (
        torch.autocast(device_type="cuda", dtype=o.amp_dtype)
        if o.amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        loss_dict = model(images, targets)
    losses = sum(loss for loss in loss_dict.values())
    _check_finite(losses, loss_dict, iteration)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses).backward()
        if o.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        losses.backward()
        if o.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        optimizer.step()
    return {k: v.detach() for k, v in loss_dict.items()}


def _log_iteration(
    log, meters, it, start_iter, o: TrainOptions, lr_factor, optimizer, device, logger
):
    eta = meters.time.global_avg * (o.max_iter - it)
    mem = peak_memory_mb(device)
    lr = lr_factor * optimizer.defaults["lr"]
    logger.info(
        "eta: %s  iter: %d/%d  %s  lr: %.6f  max mem: %.0f MB",
        format_seconds(eta),
        it,
        o.max_iter,
        str(meters),
        lr,
        mem,
    )
    record: dict[str, Any] = {"type": "train", "iter": it}
    for name, meter in meters.meters.items():
        record[name] = meter.median
        if name not in ("time", "data"):
            record[name + "_avg"] = meter.global_avg
    record.update(lr=lr, eta_seconds=eta, max_mem_mb=mem)
    log.write(record)


def _save_checkpoints(checkpointer: Checkpointer, it: int, o: TrainOptions) -> None:
    periodic = it % o.checkpoint_period == 0 or it == o.max_iter
    milestone = o.save_period > 0 and it % o.save_period == 0
    final = it == o.max_iter
    if not (periodic or milestone or final):
        return
    rng_all = comm.all_gather(get_rng_state())  # collective: every rank takes part
    extra = {"iteration": it, "rng": rng_all[0], "rng_all_ranks": rng_all, "cfg": o.cfg_yaml}
    if periodic:
        checkpointer.save(f"model_{it:07d}", folder=os.path.join(o.workspace, "model"), **extra)
    if milestone:
        checkpointer.save(
            f"model_{it:07d}",
            folder=os.path.join(o.workspace, "save"),
            rotate=False,
            update_pointer=False,
            **extra,
        )
    if final:
        final_ckpt = Checkpointer(
            checkpointer.model, save_to_disk=checkpointer.save_to_disk, logger=checkpointer.logger
        )
        final_ckpt.save(
            "model_final",
            folder=os.path.join(o.workspace, "final"),
            rotate=False,
            iteration=it,
            cfg=o.cfg_yaml,
        )


def _evaluate(test_fn, model, it: int, log: _TrainLog, logger: logging.Logger) -> None:
    # evaluation must not shift the training's random streams (a resumed run skips it)
    rng_state = get_rng_state()
    metrics = test_fn(model, it)
    set_rng_state(rng_state)
    comm.synchronize()
    if not metrics:
        return
    record: dict[str, Any] = {"type": "eval", "iter": it}
    for iou_type, values in metrics.items():
        for name, value in values.items():
            if not math.isnan(value):
                record[f"{iou_type}/{name}"] = value
    logger.info("Evaluation at iteration %d: %s", it, json.dumps(record))
    log.write(record, tb_prefix="eval/")
