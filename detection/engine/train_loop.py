"""The training loop: it only steps (data, forward, backward, update, schedule) and hands every
iteration to its hooks (`detection.engine.hooks`), which checkpoint, log, evaluate, apply the
non-finite policy and react to signals (detectron2's `TrainerBase` + `HookBase` design).

A step's verdict on non-finite values is made here (it decides whether the optimizer steps);
what to do about a bad step is the `NonFinitePolicy` hook's decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from detection.utils import comm
from detection.utils.seed import set_rng_state
from detection.utils.timer import format_seconds


@dataclasses.dataclass
class StepState:
    """What the hooks see after iteration `it` (1-based: `it` iterations are done)."""

    it: int
    start_iter: int
    max_iter: int
    loss_dict: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    problem: str | None = None  # why the step was not applied (non-finite), None when it was
    lr_factor: float = 1.0  # the learning rate of this step / the base learning rate
    data_time: float = 0.0
    batch_time: float = 0.0
    skipped_total: int = 0  # bad steps skipped since this start (NonFinitePolicy)


class HookBase:
    """A hook of the training loop; every method is optional.

    `before_train(loop)` runs once before the first iteration; `after_update(loop, state)`
    right after each iteration's forward/backward/update, before the schedule advances;
    `after_step(loop, state)` at the end of each iteration; `after_train(loop)` once at the end,
    also when training stops with an exception. Hooks run in the order they were given.
    """

    def before_train(self, loop: "TrainLoop") -> None:
        pass

    def after_update(self, loop: "TrainLoop", state: StepState) -> None:
        pass

    def after_step(self, loop: "TrainLoop", state: StepState) -> None:
        pass

    def after_train(self, loop: "TrainLoop") -> None:
        pass


def any_rank(flag: bool, device: torch.device) -> bool:
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


def _grad_norm(model: nn.Module) -> torch.Tensor:
    """The global 2-norm of the gradients (what `clip_grad_norm_` computes)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def train_step(
    model: nn.Module,
    images: Any,
    targets: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    clip_grad_norm: float,
) -> tuple[dict[str, torch.Tensor], str | None]:
    """One forward/backward/update. Returns (detached loss dict, None) after an update, or
    (loss dict, problem) when the loss or the gradients were non-finite: then no update was
    made and the gradients are cleared. Every rank returns the same verdict.

    The summed loss is checked after the forward pass, the global gradient norm after the
    backward pass: one `get_total_norm`, checked before `clip_grad_norm` clips with that same norm
    (clipping would make every gradient NaN and hide which were bad). With the float16 grad
    scaler its own inf check is used instead (overflowing steps are expected there and lower the
    scale). One process skips the backward of a non-finite loss. In a distributed run every rank
    runs the backward (DDP's all-reduce needs them all) and the ranks agree on the loss's verdict
    after it, where the gradient all-reduce has just brought them together: a collective between
    forward and backward would make each rank wait for the slowest forward too.
    """
    images = images.to(device)
    targets = [t.to(device) for t in targets]
    autocast = (
        torch.autocast(device_type="cuda", dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        loss_dict = model(images, targets)
    losses = sum(loss for loss in loss_dict.values())
    optimizer.zero_grad(set_to_none=True)
    detached = {k: v.detach() for k, v in loss_dict.items()}
    loss_bad = not bool(torch.isfinite(losses.detach()).all())
    if loss_bad and comm.get_world_size() < 2:
        return detached, _nonfinite_loss_problem(detached)
    (scaler.scale(losses) if scaler is not None else losses).backward()
    if any_rank(loss_bad, device):  # one process: False here (returned above)
        optimizer.zero_grad(set_to_none=True)
        return detached, _nonfinite_loss_problem(detached)
    if scaler is not None:
        if clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)  # skips the update itself on inf/NaN gradients (fp16 overflow)
        scaler.update()
        return detached, None
    # after DDP's all-reduce the gradients, hence this norm, are the same on every rank
    norm = _grad_norm(model)
    if not bool(torch.isfinite(norm)):
        problem = _nonfinite_grad_problem(model, float(norm))
        optimizer.zero_grad(set_to_none=True)
        return detached, problem
    if clip_grad_norm > 0:  # = clip_grad_norm_, reusing the norm just checked
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grads_with_norm_(params, clip_grad_norm, norm)
    optimizer.step()
    return detached, None


class TrainLoop:
    """Iterations `start_iter .. max_iter - 1` of `train_step`, then `scheduler.step()`, then the
    hooks' `after_step`.

    `data_loader` yields `(images, targets, indices)` for iterations start_iter, start_iter+1,
    ...; `rng_state` (from a checkpoint) is restored right after the loader's iterator is
    created, so a resumed run draws the same random numbers as an uninterrupted one.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        device: torch.device,
        max_iter: int,
        start_iter: int = 0,
        amp_dtype: torch.dtype | None = None,
        clip_grad_norm: float = 0.0,
        rng_state: dict[str, Any] | None = None,
        hooks: Sequence[HookBase] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.max_iter = max_iter
        self.start_iter = start_iter
        self.amp_dtype = amp_dtype
        self.clip_grad_norm = clip_grad_norm
        self.rng_state = rng_state
        self.hooks = list(hooks)
        self.logger = logger or logging.getLogger("detection.trainer")

    def run(self) -> None:
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        base_lr = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups][0]
        state = StepState(it=self.start_iter, start_iter=self.start_iter, max_iter=self.max_iter)
        try:
            for hook in self.hooks:
                hook.before_train(self)
            self.model.train()
            data_iter = iter(self.data_loader)
            if self.rng_state is not None:
                set_rng_state(self.rng_state)
            self.logger.info("Start training: iterations %d..%d", self.start_iter, self.max_iter)
            train_start = end = time.perf_counter()
            for iteration in range(self.start_iter, self.max_iter):
                try:
                    images, targets, _ = next(data_iter)
                except StopIteration:
                    raise RuntimeError(
                        f"the training data loader ended at iteration {iteration} < SOLVER.MAX_ITER"
                    ) from None
                state.data_time = time.perf_counter() - end
                state.it = iteration + 1
                state.lr_factor = self.optimizer.param_groups[0]["lr"] / base_lr
                state.loss_dict, state.problem = train_step(
                    self.model,
                    images,
                    targets,
                    self.optimizer,
                    scaler,
                    self.device,
                    self.amp_dtype,
                    self.clip_grad_norm,
                )
                for hook in self.hooks:
                    hook.after_update(self, state)
                self.scheduler.step()
                state.batch_time = time.perf_counter() - end
                for hook in self.hooks:
                    hook.after_step(self, state)
                end = time.perf_counter()
            total_time = time.perf_counter() - train_start
            self.logger.info(
                "Total training time: %s (%.4f s / it)",
                format_seconds(total_time),
                total_time / max(self.max_iter - self.start_iter, 1),
            )
        finally:
            for hook in self.hooks:
                hook.after_train(self)
