"""SIGTERM / SIGINT: stop at the next iteration boundary with a checkpoint of that iteration.

A handler only sets a flag; after each iteration the flag is all-reduced over ranks (so every
rank stops at the same iteration), a checkpoint of that iteration is written through the
checkpoint hook and `TrainingInterrupted` is raised (tools/train.py exits 128 + signal: 143 for
SIGTERM, 130 for SIGINT). A second signal gets the previous handler (Ctrl-C twice interrupts at
once; the atomic writes keep the last checkpoint whole). A signal during the last iteration just
lets the run finish.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from detection.engine.hooks.checkpoint import CheckpointHook
from detection.engine.train_loop import HookBase, StepState
from detection.utils import comm


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


class StopSignals:
    """SIGTERM/SIGINT handlers that only record the signal; restored on exit.

    The first signal puts the previous handler back, so a second one acts as it did before.
    Handlers can only be installed from the main thread; elsewhere this does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
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


class SignalHook(HookBase):
    """Installs `StopSignals` for the run; after each iteration before the last, a pending
    signal makes `checkpoints` write a checkpoint of it (unless its periodic one was just
    written) and raises `TrainingInterrupted`."""

    def __init__(self, checkpoints: CheckpointHook) -> None:
        self.checkpoints = checkpoints
        self.stop = StopSignals()

    def before_train(self, loop) -> None:
        self.stop.__enter__()

    def after_step(self, loop, state: StepState) -> None:
        signum = self.stop.pending(loop.device)
        if not signum or state.it >= state.max_iter:
            return
        if state.it % self.checkpoints.checkpoint_period == 0:  # written just now
            saved = self.checkpoints.written[1] if self.checkpoints.written[0] == state.it else None
        else:
            saved = self.checkpoints.save(state.it, force=True)
        raise TrainingInterrupted(signum, state.it, saved)

    def after_train(self, loop) -> None:
        self.stop.__exit__()
