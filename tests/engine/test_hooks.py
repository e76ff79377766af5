"""Each training-loop hook alone, on a hand-made `StepState` and a stand-in loop."""

import json
import logging
import os
import signal
from types import SimpleNamespace

import pytest
import torch
from torch import nn

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
from detection.engine.train_loop import StepState

LOGGER = logging.getLogger("detection.test_hooks")


def _loop(model=None):
    return SimpleNamespace(model=model or nn.Linear(2, 2), device=torch.device("cpu"))


def _state(it, max_iter=10, problem=None, **kw):
    losses = {"loss_a": torch.tensor(1.0 * it), "loss_b": torch.tensor(0.5)}
    return StepState(
        it=it, start_iter=0, max_iter=max_iter, loss_dict=losses, problem=problem, **kw
    )


# ---------------------------------------------------------------------------- non-finite policy
def test_nonfinite_policy_stops_at_the_first_bad_step_by_default():
    hook = NonFinitePolicy(0, lambda: "/ws/model/model_0000004.pth", LOGGER)
    hook.after_update(_loop(), _state(5))  # a good step: nothing happens
    with pytest.raises(NonFiniteStepError) as err:
        hook.after_update(_loop(), _state(6, problem="non-finite loss terms loss_a=nan"))
    msg = str(err.value)
    assert msg.startswith("iteration 6: non-finite loss terms loss_a=nan")
    assert "SOLVER.SKIP_NONFINITE_STEPS is 0" in msg and "model_0000004.pth" in msg


def test_nonfinite_policy_skips_up_to_n_in_a_row(caplog):
    hook = NonFinitePolicy(2, lambda: None, LOGGER)
    state = _state(1)
    for it, problem in [(1, "bad"), (2, "bad"), (3, None), (4, "bad"), (5, "bad")]:
        state.it, state.problem = it, problem
        hook.after_update(_loop(), state)
    assert state.skipped_total == 4  # since this start
    assert caplog.text.count("step skipped") == 4
    state.it, state.problem = 6, "bad"  # the third in a row
    with pytest.raises(NonFiniteStepError, match="3 bad steps in a row > SOLVER.SKIP"):
        hook.after_update(_loop(), state)


# ------------------------------------------------------------------------------------- logging
def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_logging_writes_the_first_every_period_and_the_last_iteration(tmp_path):
    log = TrainLog(str(tmp_path / "log"), enabled=True)
    hook = LoggingHook(log, log_period=3, base_lr=0.1, logger=LOGGER)
    hook.before_train(_loop())
    state = _state(1, max_iter=7)
    for it in range(1, 8):
        state.it, state.lr_factor = it, 0.5
        state.loss_dict = {"loss_a": torch.tensor(float(it)), "loss_b": torch.tensor(0.5)}
        hook.after_step(_loop(), state)
    hook.after_train(_loop())
    recs = _records(tmp_path / "log" / "metrics.jsonl")
    assert [r["iter"] for r in recs] == [1, 3, 6, 7]
    last = recs[-1]
    assert last["type"] == "train" and last["lr"] == pytest.approx(0.05)
    assert last["loss_a_avg"] == pytest.approx(4.0)  # mean of 1..7
    assert last["loss"] == pytest.approx(last["loss_a"] + 0.5)
    assert {"time", "data", "eta_seconds", "max_mem_mb", "skipped_steps"} <= set(last)
    assert glob_events(tmp_path / "log"), "TensorBoard event file"


def glob_events(folder):
    return [f for f in os.listdir(folder) if f.startswith("events.out.tfevents")]


def test_logging_leaves_skipped_steps_out_of_the_losses(tmp_path):
    log = TrainLog(str(tmp_path), enabled=True)
    hook = LoggingHook(log, log_period=1, base_lr=0.1, logger=LOGGER)
    hook.after_step(_loop(), _state(1, max_iter=3))
    hook.after_step(_loop(), _state(2, max_iter=3, problem="bad", skipped_total=1))
    log.close()
    recs = _records(tmp_path / "metrics.jsonl")
    assert recs[1]["loss_a_avg"] == 1.0 and recs[1]["skipped_steps"] == 1


def test_a_disabled_log_writes_nothing(tmp_path):
    log = TrainLog(str(tmp_path / "log"), enabled=False)  # ranks other than 0
    LoggingHook(log, 1, 0.1, LOGGER).after_step(_loop(), _state(1))
    assert not os.path.exists(tmp_path / "log")


# ---------------------------------------------------------------------------------- checkpoints
def _ckpt_hook(tmp_path, model, **kw):
    ck = Checkpointer(model, save_dir=str(tmp_path / "model"), keep=0)
    opts = dict(workspace=str(tmp_path), checkpoint_period=2, save_period=3, max_iter=4)
    opts.update(kw)
    return CheckpointHook(ck, cfg_yaml="SOLVER: {}", **opts)


def _files(tmp_path):
    return sorted(
        os.path.relpath(os.path.join(d, f), tmp_path)
        for d, _, fs in os.walk(tmp_path)
        for f in fs
        if f.endswith(".pth")
    )


def test_checkpoint_schedule(tmp_path):
    hook = _ckpt_hook(tmp_path, nn.Linear(2, 2))
    written = []
    for it in range(1, 5):
        hook.after_step(_loop(), _state(it, max_iter=4))
        written.append(_files(tmp_path))
    assert written[0] == []
    assert written[1] == ["model/model_0000002.pth"]
    assert written[2] == ["model/model_0000002.pth", "save/model_0000003.pth"]
    assert written[3] == [
        "final/model_final.pth",
        "model/model_0000002.pth",
        "model/model_0000004.pth",
        "save/model_0000003.pth",
    ]
    assert hook.written == (4, str(tmp_path / "model" / "model_0000004.pth"))
    ckpt = torch.load(tmp_path / "model" / "model_0000004.pth", weights_only=False)
    assert (
        ckpt["iteration"] == 4 and ckpt["cfg"] == "SOLVER: {}" and len(ckpt["rng_all_ranks"]) == 1
    )
    assert hook.last_checkpoint() == str(tmp_path / "model" / "model_0000004.pth")


def test_non_finite_weights_are_never_saved(tmp_path):
    model = nn.Linear(2, 2)
    hook = _ckpt_hook(tmp_path, model)
    hook.after_step(_loop(), _state(2, max_iter=4))
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteStepError, match="non-finite weights .* in weight") as err:
        hook.after_step(_loop(), _state(4, max_iter=4))
    assert "model_0000002.pth" in str(err.value)
    assert _files(tmp_path) == ["model/model_0000002.pth"]


# ----------------------------------------------------------------------------------- evaluation
def test_evaluation_runs_every_period_and_keeps_the_random_streams(tmp_path):
    calls = []

    def test_fn(model, it):
        calls.append((it, model.training))
        torch.rand(3)  # evaluation draws random numbers
        return {"bbox": {"AP": 0.5, "APs": float("nan")}}

    log = TrainLog(str(tmp_path), enabled=True)
    model = nn.Linear(2, 2).eval()
    hook = EvalHook(test_fn, period=2, log=log, logger=LOGGER)
    torch.manual_seed(0)
    hook.after_step(_loop(model), _state(1))
    hook.after_step(_loop(model), _state(2))
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1)), "the training's random stream is unchanged"
    assert calls == [(2, False)] and model.training, "evaluated once, then back to train()"
    log.close()
    (rec,) = _records(tmp_path / "metrics.jsonl")
    assert rec == {"type": "eval", "iter": 2, "bbox/AP": 0.5}  # NaN metrics left out


# -------------------------------------------------------------------------------------- signals
def test_signal_stops_at_the_iteration_boundary_with_a_checkpoint(tmp_path):
    checkpoints = _ckpt_hook(tmp_path, nn.Linear(2, 2), checkpoint_period=100, max_iter=10)
    hook = SignalHook(checkpoints)
    before = signal.getsignal(signal.SIGTERM)
    hook.before_train(_loop())
    try:
        hook.after_step(_loop(), _state(2))  # nothing pending
        os.kill(os.getpid(), signal.SIGTERM)  # recorded by the handler only
        with pytest.raises(TrainingInterrupted) as err:
            hook.after_step(_loop(), _state(3))
    finally:
        hook.after_train(_loop())
    assert err.value.exit_code == 143 and err.value.iteration == 3
    assert err.value.checkpoint == str(tmp_path / "model" / "model_0000003.pth")
    assert _files(tmp_path) == ["model/model_0000003.pth"]
    assert signal.getsignal(signal.SIGTERM) is before, "handlers restored"


def test_signal_in_the_last_iteration_lets_the_run_finish(tmp_path):
    checkpoints = _ckpt_hook(tmp_path, nn.Linear(2, 2), max_iter=4)
    hook = SignalHook(checkpoints)
    hook.before_train(_loop())
    try:
        os.kill(os.getpid(), signal.SIGINT)
        hook.after_step(_loop(), _state(4, max_iter=4))  # no exception
    finally:
        hook.after_train(_loop())
    assert _files(tmp_path) == []
