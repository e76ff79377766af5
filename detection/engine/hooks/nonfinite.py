"""The non-finite policy (SOLVER.SKIP_NONFINITE_STEPS): stop at a bad step, or skip up to N in a
row. The loop has already left the bad step unapplied (no optimizer update, gradients cleared;
the schedule still advances)."""

from __future__ import annotations

import logging

from detection.engine.train_loop import HookBase, StepState


class NonFiniteStepError(FloatingPointError):
    """Training stopped at a non-finite loss or gradient (SOLVER.SKIP_NONFINITE_STEPS)."""


class NonFinitePolicy(HookBase):
    """With `skip_nonfinite_steps` 0 a bad step raises `NonFiniteStepError` naming the iteration
    and the non-finite loss terms (or parameters), before anything is written for that
    iteration; with N > 0 it is logged and counted (`state.skipped_total`, since this start),
    and training stops once more than N steps in a row were bad. `last_checkpoint()` names the
    checkpoint a stopped run can resume from (for the message)."""

    def __init__(self, skip_nonfinite_steps: int, last_checkpoint, logger: logging.Logger) -> None:
        self.skip_nonfinite_steps = skip_nonfinite_steps
        self.last_checkpoint = last_checkpoint
        self.logger = logger
        self.skipped_run = 0

    def after_update(self, loop, state: StepState) -> None:
        if state.problem is None:
            self.skipped_run = 0
            return
        state.skipped_total += 1
        self.skipped_run += 1
        n = self.skip_nonfinite_steps
        if self.skipped_run > n:
            why = (
                "SOLVER.SKIP_NONFINITE_STEPS is 0"
                if n == 0
                else f"{self.skipped_run} bad steps in a row > SOLVER.SKIP_NONFINITE_STEPS {n}"
            )
            raise NonFiniteStepError(
                f"iteration {state.it}: {state.problem}; training stopped ({why}). Nothing was "
                f"saved for this iteration; last checkpoint: {self.last_checkpoint() or 'none'}"
            )
        self.logger.warning(
            "iteration %d: %s; step skipped (%d in a row, SOLVER.SKIP_NONFINITE_STEPS %d)",
            state.it,
            state.problem,
            self.skipped_run,
            n,
        )
