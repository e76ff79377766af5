"""The training loop: mixed precision, gradient clipping, logging (console, file, TensorBoard,
metrics.jsonl), periodic/milestone/final checkpoints and periodic evaluation.

Faults (see RELIABILITY.md section 4):

* Non-finite loss or gradients. The summed loss is checked after the forward pass (before any
  backward), the global gradient norm after the backward pass: one `get_total_norm` over the
  gradients, checked before SOLVER.CLIP_GRAD_NORM clips with that same norm (clipping would make
  every gradient NaN and hide which were bad), so the check costs nothing when clipping is on.
  With the float16 grad scaler its own inf check is used instead (overflowing steps are expected
  there and lower the scale). With SOLVER.SKIP_NONFINITE_STEPS 0 training stops with a
  `NonFiniteStepError` naming the iteration and the non-finite loss terms (or parameters), before
  the optimizer step and before anything is written for that iteration. With N > 0 the step is
  skipped (no optimizer update; the schedule still advances), counted in the log as
  `skipped_steps` (since this start), and training stops once more than N steps in a row were
  bad. Before any checkpoint is written the weights are checked too (an update with finite
  gradients can still overflow): non-finite weights always stop training, unsaved.
* SIGTERM / SIGINT. A handler only sets a flag; at the next iteration boundary (all-reduced over
  ranks, so every rank stops at the same iteration) a checkpoint of that iteration is written
  through the checkpointer and `TrainingInterrupted` is raised (tools/train.py exits 128 +
  signal: 143 for SIGTERM, 130 for SIGINT). A second signal gets the previous handler (Ctrl-C
  twice interrupts at once; the atomic writes keep the last checkpoint whole).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import resource
import signal
import threading
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn

from detection.engine.amp import AMP_DTYPES, resolve_amp_dtype  # noqa: F401 (re-exported)
from detection.engine.checkpointer import Checkpointer, unwrap_model
from detection.utils import comm
from detection.utils.metric_logger import MetricLogger
from detection.utils.seed import get_rng_state, set_rng_state
from detection.utils.timer import format_seconds


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


class NonFiniteStepError(FloatingPointError):
    """Training stopped at a non-finite loss or gradient (SOLVER.SKIP_NONFINITE_STEPS)."""


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT stopped training after a checkpoint of `iteration` was written.

    `exit_code` is 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the shell's
    convention for "terminated by this signal", so a job script does not mistake it for a
    finished run."""

    def __init__(self, signum: int, iteration: int, checkpoint: str | None) -> None:
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: stopped after iteration {iteration}"
            + (f", checkpoint {checkpoint}" if checkpoint else "")
            + " (continue with --resume)"
        )


class _StopSignals:
    """SIGTERM/SIGINT handlers that only record the signal; restored on exit.

    The first signal puts the previous handler back, so a second one acts as it did before.
    Handlers can only be installed from the main thread; elsewhere this does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def pending(self, device: torch.device) -> int:
        """The signal to stop for (0 = none), the same on every rank (max over ranks)."""
        if comm.get_world_size() < 2:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is set on any rank (a collective in distributed runs)."""
    if comm.get_world_size() < 2:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _nonfinite_loss_problem(loss_dict: dict[str, torch.Tensor]) -> str:
    bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    good = {k: round(float(v.detach()), 6) for k, v in loss_dict.items() if k not in bad}
    if not bad:
        return f"non-finite loss on another rank (losses here: {good})"
    terms = ", ".join(f"{k}={v}" for k, v in bad.items())
    return f"non-finite loss terms {terms} (finite: {good})"


def _nonfinite_grad_problem(model: nn.Module, total_norm: float) -> str:
    names = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"non-finite gradients (total norm {total_norm}) in {shown or 'no parameter here'}"


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

    stop = _StopSignals()
    skipped_total = skipped_run = 0
    try:
        stop.__enter__()
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
            loss_dict, problem = _train_step(model, images, targets, optimizer, scaler, device, o)
            if problem is not None:
                skipped_total, skipped_run = skipped_total + 1, skipped_run + 1
                _handle_bad_step(problem, it, skipped_run, o, checkpointer, logger)
            else:
                skipped_run = 0
            scheduler.step()
            if problem is None:
                reduced = comm.reduce_dict(loss_dict)
                meters.update(loss=sum(reduced.values()), **reduced)
            batch_time = time.perf_counter() - end
            meters.update(time=batch_time, data=data_time)
            if it % o.log_period == 0 or it == o.max_iter or iteration == start_iter:
                _log_iteration(
                    log, meters, it, o, lr_factor, optimizer, device, logger, skipped_total
                )
            saved = _save_checkpoints(checkpointer, it, o)
            if test_fn is not None and o.test_period and it % o.test_period == 0:
                _evaluate(test_fn, model, it, log, logger)
                model.train()
            signum = stop.pending(device)
            if signum and it < o.max_iter:
                if it % o.checkpoint_period != 0:  # else written just above (same on all ranks)
                    saved = _save_checkpoints(checkpointer, it, o, force=True)
                raise TrainingInterrupted(signum, it, saved)
            end = time.perf_counter()
        total_time = time.perf_counter() - train_start
        logger.info(
            "Total training time: %s (%.4f s / it)",
            format_seconds(total_time),
            total_time / max(o.max_iter - start_iter, 1),
        )
    finally:
        stop.__exit__()
        log.close()


def _handle_bad_step(
    problem: str, it: int, skipped_run: int, o: TrainOptions, checkpointer, logger
) -> None:
    """Raise NonFiniteStepError (stop mode, or too many bad steps in a row), else log the skip."""
    if skipped_run > o.skip_nonfinite_steps:
        last = checkpointer.get_checkpoint_file() if checkpointer.save_dir else None
        why = (
            "SOLVER.SKIP_NONFINITE_STEPS is 0"
            if o.skip_nonfinite_steps == 0
            else f"{skipped_run} bad steps in a row > SOLVER.SKIP_NONFINITE_STEPS "
            f"{o.skip_nonfinite_steps}"
        )
        raise NonFiniteStepError(
            f"iteration {it}: {problem}; training stopped ({why}). Nothing was saved for this "
            f"iteration; last checkpoint: {last or 'none'}"
        )
    logger.warning(
        "iteration %d: %s; step skipped (%d in a row, SOLVER.SKIP_NONFINITE_STEPS %d)",
        it,
        problem,
        skipped_run,
        o.skip_nonfinite_steps,
    )


def _grad_norm(model: nn.Module) -> torch.Tensor:
    """The global 2-norm of the gradients (what `clip_grad_norm_` computes)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def _train_step(model, images, targets, optimizer, scaler, device, o: TrainOptions):
    """One forward/backward/update. Returns (detached loss dict, None) after an update, or
    (loss dict, problem) when the loss or the gradients were non-finite: then no update was
    made and the gradients are cleared. Every rank returns the same verdict."""
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
    optimizer.zero_grad(set_to_none=True)
    detached = {k: v.detach() for k, v in loss_dict.items()}
    # decided before backward, on every rank together (DDP needs all or none to run backward)
    if _any_rank(not bool(torch.isfinite(losses.detach()).all()), device):
        return detached, _nonfinite_loss_problem(detached)
    if scaler is not None:
        scaler.scale(losses).backward()
        if o.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        scaler.step(optimizer)  # skips the update itself on inf/NaN gradients (fp16 overflow)
        scaler.update()
        return detached, None
    losses.backward()
    # after DDP's all-reduce the gradients, hence this norm, are the same on every rank
    norm = _grad_norm(model)
    if not bool(torch.isfinite(norm)):
        problem = _nonfinite_grad_problem(model, float(norm))
        optimizer.zero_grad(set_to_none=True)
        return detached, problem
    if o.clip_grad_norm > 0:  # = clip_grad_norm_, reusing the norm just checked
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grads_with_norm_(params, o.clip_grad_norm, norm)
    optimizer.step()
    return detached, None


def _log_iteration(
    log, meters, it, o: TrainOptions, lr_factor, optimizer, device, logger, skipped: int = 0
):
    eta = meters.time.global_avg * (o.max_iter - it)
    mem = peak_memory_mb(device)
    lr = lr_factor * optimizer.defaults["lr"]
    logger.info(
        "eta: %s  iter: %d/%d  %s  lr: %.6f  max mem: %.0f MB%s",
        format_seconds(eta),
        it,
        o.max_iter,
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
    log.write(record)


def _save_checkpoints(
    checkpointer: Checkpointer, it: int, o: TrainOptions, force: bool = False
) -> str | None:
    """Write the checkpoints due after iteration `it` (`force`: a periodic one regardless).
    Returns the periodic checkpoint's path when one was written (None off rank 0)."""
    periodic = force or it % o.checkpoint_period == 0 or it == o.max_iter
    milestone = not force and o.save_period > 0 and it % o.save_period == 0
    final = not force and it == o.max_iter
    if not (periodic or milestone or final):
        return None
    _check_weights_finite(checkpointer, it)
    rng_all = comm.all_gather(get_rng_state())  # collective: every rank takes part
    extra = {"iteration": it, "rng": rng_all[0], "rng_all_ranks": rng_all, "cfg": o.cfg_yaml}
    path = None
    if periodic:
        path = checkpointer.save(
            f"model_{it:07d}", folder=os.path.join(o.workspace, "model"), **extra
        )
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
    return path


def _check_weights_finite(checkpointer: Checkpointer, it: int) -> None:
    """Refuse to write non-finite weights (an update can overflow with finite gradients), so the
    last checkpoint is always a good one. Same verdict on every rank (replicas are identical)."""
    state = unwrap_model(checkpointer.model).state_dict()
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        last = checkpointer.get_checkpoint_file() if checkpointer.save_dir else None
        raise NonFiniteStepError(
            f"iteration {it}: non-finite weights after the update in {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + f"; training stopped without saving; last checkpoint: {last or 'none'}"
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
