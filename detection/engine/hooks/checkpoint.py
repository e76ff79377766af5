"""The checkpoint schedule: periodic (rotated), milestone and final checkpoints."""

from __future__ import annotations

import os

import torch

from detection.engine.checkpointer import Checkpointer, unwrap_model
from detection.engine.hooks.nonfinite import NonFiniteStepError
from detection.engine.train_loop import HookBase, StepState
from detection.utils import comm
from detection.utils.seed import get_rng_state


class CheckpointHook(HookBase):
    """After iteration `it`: WORKSPACE/model/model_<it>.pth every `checkpoint_period` iterations
    and at the end (rotated by the checkpointer, `last_checkpoint` updated), WORKSPACE/save/
    every `save_period` (0 = never; kept), WORKSPACE/final/model_final.pth at the end (weights,
    iteration and config only). Each holds the iteration, every rank's RNG states and the config.

    Non-finite weights are never written (an update with finite gradients can still overflow):
    `NonFiniteStepError` instead, so the last checkpoint is always a good one.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        workspace: str,
        checkpoint_period: int,
        save_period: int,
        max_iter: int,
        cfg_yaml: str = "",
    ) -> None:
        self.checkpointer = checkpointer
        self.workspace = workspace
        self.checkpoint_period = checkpoint_period
        self.save_period = save_period
        self.max_iter = max_iter
        self.cfg_yaml = cfg_yaml
        self.written: tuple[int, str | None] = (-1, None)  # (iteration, periodic checkpoint)

    def last_checkpoint(self) -> str | None:
        """The checkpoint `last_checkpoint` names (None without one, or without a save_dir)."""
        ck = self.checkpointer
        return ck.get_checkpoint_file() if ck.save_dir else None

    def after_step(self, loop, state: StepState) -> None:
        self.written = (state.it, self.save(state.it))

    def save(self, it: int, force: bool = False) -> str | None:
        """Write the checkpoints due after iteration `it` (`force`: a periodic one regardless).
        Returns the periodic checkpoint's path when one was written (None off rank 0)."""
        periodic = force or it % self.checkpoint_period == 0 or it == self.max_iter
        milestone = not force and self.save_period > 0 and it % self.save_period == 0
        final = not force and it == self.max_iter
        if not (periodic or milestone or final):
            return None
        self._check_weights_finite(it)
        rng_all = comm.all_gather(get_rng_state())  # collective: every rank takes part
        extra = {"iteration": it, "rng": rng_all[0], "rng_all_ranks": rng_all, "cfg": self.cfg_yaml}
        ck = self.checkpointer
        path = None
        if periodic:
            path = ck.save(f"model_{it:07d}", folder=os.path.join(self.workspace, "model"), **extra)
        if milestone:
            ck.save(
                f"model_{it:07d}",
                folder=os.path.join(self.workspace, "save"),
                rotate=False,
                update_pointer=False,
                **extra,
            )
        if final:
            final_ckpt = Checkpointer(ck.model, save_to_disk=ck.save_to_disk, logger=ck.logger)
            final_ckpt.save(
                "model_final",
                folder=os.path.join(self.workspace, "final"),
                rotate=False,
                iteration=it,
                cfg=self.cfg_yaml,
            )
        return path

    def _check_weights_finite(self, it: int) -> None:
        """Same verdict on every rank (replicas are identical)."""
        state = unwrap_model(self.checkpointer.model).state_dict()
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteStepError(
                f"iteration {it}: non-finite weights after the update in {', '.join(bad[:5])}"
                + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                + f"; training stopped without saving; last checkpoint: "
                f"{self.last_checkpoint() or 'none'}"
            )
