"""Training faults: non-finite loss/gradients (stop or skip), SIGINT/SIGTERM (checkpoint, exact
resume), SIGKILL while a checkpoint is being written (resumable), architecture mismatch.

The loop-level tests use the stand-in model and loader of tests/testutils/toy_training.py
(milliseconds); the tests marked slow run tools/train.py on the tiny shapes config of
tests/testutils/tools.py, killing a real training subprocess. See RELIABILITY.md section 4 (this file is its fault
matrix, hence its length).
"""

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from detection.engine.checkpointer import Checkpointer
from detection.engine.trainer import NonFiniteStepError, TrainingInterrupted, TrainOptions, do_train
from detection.solver import build_lr_scheduler, build_optimizer
from detection.utils.seed import seed_all
from testutils import tools as tools_helpers
from testutils.toy_training import Target, ToyModel, toy_cfg, toy_loader

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# ------------------------------------------------------------------ loop level (stand-in model)
def _bad_loader(start_iter, max_iter, nan_at=(), signal_at=None, signum=signal.SIGINT):
    """toy_loader, but the targets of the 0-based iterations in `nan_at` are NaN (so
    loss_reg is NaN) and `signum` is sent to this process while batch `signal_at` is made."""
    for i, (images, targets, idx) in zip(
        range(start_iter, max_iter), toy_loader(start_iter, max_iter)
    ):
        if i in nan_at:
            targets = tuple(Target(torch.full_like(t.y, float("nan"))) for t in targets)
        if i == signal_at:
            os.kill(os.getpid(), signum)
        yield images, targets, idx


def _train(c, loader, model=None, resume=False):
    seed_all(c.SEED)
    model = model or ToyModel()
    opt = build_optimizer(c, model)
    sched = build_lr_scheduler(c, opt)
    ck = Checkpointer(
        model,
        opt,
        sched,
        save_dir=os.path.join(c.WORKSPACE, "model"),
        keep=c.SOLVER.CHECKPOINT_KEEP,
    )
    start, rng = 0, None
    if resume:
        rest = ck.load(ck.get_checkpoint_file(), resume=True)
        start, rng = rest["iteration"], rest["rng"]
    do_train(
        model,
        loader(start, c.SOLVER.MAX_ITER),
        opt,
        sched,
        ck,
        torch.device("cpu"),
        TrainOptions.from_config(c, torch.device("cpu")),
        start_iter=start,
        rng_state=rng,
        logger=logging.getLogger("test.faults"),
    )
    return model


def _snapshots(model):
    """fc.weight as each forward pass sees it (= after the previous iteration's update)."""
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.fc.weight.detach().clone()))
    return seen


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_nan_loss_stops_naming_iteration_and_terms_and_keeps_last_checkpoint(tmp_path):
    c = toy_cfg(tmp_path)  # CHECKPOINT_PERIOD 2, keep 2, SAVE_PERIOD 5, MAX_ITER 10
    model = ToyModel()
    seen = _snapshots(model)
    with pytest.raises(NonFiniteStepError) as info:
        _train(c, lambda s, m: _bad_loader(s, m, nan_at={4}), model=model)
    msg = str(info.value)
    assert "iteration 5" in msg and "loss_reg=nan" in msg, msg
    assert "loss_l1=" not in msg.split("(finite")[0], "a finite term was named non-finite: " + msg
    assert "model_0000004.pth" in msg and "SOLVER.SKIP_NONFINITE_STEPS is 0" in msg
    assert sorted(os.listdir(tmp_path / "model")) == [
        "last_checkpoint",
        "model_0000002.pth",
        "model_0000004.pth",
    ], "nothing may be written at or after the bad step"
    assert not (tmp_path / "final").exists() and not (tmp_path / "save").exists()
    saved = _weights(tmp_path / "model" / "model_0000004.pth")
    assert torch.equal(saved["fc.weight"], seen[4]), (
        "the checkpoint is the state before the bad step"
    )
    assert torch.equal(model.fc.weight, seen[4]), "no optimizer update at the bad step"


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_non_finite_gradient_stops_naming_parameters(tmp_path, clip):
    c = toy_cfg(tmp_path, CLIP_GRAD_NORM=clip)
    model = ToyModel()
    seen = _snapshots(model)
    model.norm.weight.register_hook(lambda g: g * float("inf") if len(seen) == 3 else g)
    with pytest.raises(NonFiniteStepError) as info:
        _train(c, toy_loader, model=model)
    msg = str(info.value)
    assert "iteration 3" in msg and "non-finite gradients" in msg and "norm.weight" in msg, msg
    assert "fc.weight" not in msg, "only the parameters with non-finite gradients are named"
    assert torch.equal(model.fc.weight, seen[2]), "no optimizer update at the bad step"


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    """An update can overflow with finite loss and gradients (here: a weight set to inf during
    the forward pass of iteration 4, a checkpoint iteration): nothing is saved."""
    c = toy_cfg(tmp_path)
    model = ToyModel()
    seen = _snapshots(model)

    def corrupt(m, args, out):
        if len(seen) == 4:
            m.fc.bias.data[0] = float("inf")

    model.register_forward_hook(corrupt)
    with pytest.raises(NonFiniteStepError) as info:
        _train(c, toy_loader, model=model)
    msg = str(info.value)
    assert "iteration 4: non-finite weights" in msg and "fc.bias" in msg, msg
    assert "model_0000002.pth" in msg
    assert sorted(os.listdir(tmp_path / "model")) == ["last_checkpoint", "model_0000002.pth"]


def test_skip_mode_skips_bad_steps_then_stops_after_too_many(tmp_path):
    c = toy_cfg(tmp_path / "a", SKIP_NONFINITE_STEPS=2, LOG_PERIOD=1)
    model = ToyModel()
    seen = _snapshots(model)
    _train(c, lambda s, m: _bad_loader(s, m, nan_at={4, 5}), model=model)
    assert len(seen) == 10
    assert not torch.equal(seen[3], seen[4]), "good steps update"
    assert torch.equal(seen[4], seen[5]) and torch.equal(seen[5], seen[6]), "bad steps do not"
    assert not torch.equal(seen[6], seen[7])
    records = [
        json.loads(x) for x in (tmp_path / "a" / "log" / "metrics.jsonl").read_text().splitlines()
    ]
    skipped = {r["iter"]: r["skipped_steps"] for r in records if r["type"] == "train"}
    assert skipped[4] == 0 and skipped[5] == 1 and skipped[6] == 2 and skipped[10] == 2
    assert all(r["loss"] == r["loss"] for r in records if r["type"] == "train"), "NaN in meters"
    assert (tmp_path / "a" / "final" / "model_final.pth").is_file()

    c = toy_cfg(tmp_path / "b", SKIP_NONFINITE_STEPS=2)
    with pytest.raises(NonFiniteStepError, match=r"iteration 7: .*3 bad steps in a row > "):
        _train(c, lambda s, m: _bad_loader(s, m, nan_at={4, 5, 6}))


def test_sigint_saves_current_iteration_and_resume_is_exact(tmp_path):
    straight = _train(toy_cfg(tmp_path / "a"), toy_loader)
    c = toy_cfg(tmp_path / "b")  # CHECKPOINT_PERIOD 2: iteration 5 is not a periodic one
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        _train(c, lambda s, m: _bad_loader(s, m, signal_at=4))
    assert info.value.exit_code == 130 and info.value.iteration == 5
    assert "SIGINT received: stopped after iteration 5" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is before, "the previous handler is restored"
    assert (tmp_path / "b" / "model" / "last_checkpoint").read_text().strip() == "model_0000005.pth"
    resumed = _train(c, toy_loader, resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


# -------------------------------------------------------- tools/train.py (tiny shapes config)
real = pytest.mark.skipif(not tools_helpers.OPS_READY, reason="needs the compiled detection ops")
CONFIG = tools_helpers.CONFIG
# 6 iterations; weights do not depend on CHECKPOINT_PERIOD, so runs that differ only there and in
# interruptions must end with identical weights (DETERMINISTIC True, no loader workers, CPU)
RUN = tools_helpers.TINY + ["SOLVER.MAX_ITER", "6", "SOLVER.SAVE_PERIOD", "0"]


@pytest.fixture
def _tool_env():
    """Like test_tools.py's fixtures: one thread, logging and determinism restored afterwards."""
    logger = logging.getLogger("detection")
    state = (list(logger.handlers), logger.propagate, logger.level)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in state[0]:
        logger.addHandler(handler)
    logger.propagate, logger.level = state[1], state[2]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 6-iteration run (in-process); also generates the shapes data."""
    root = str(tmp_path_factory.mktemp("data"))
    ws = str(tmp_path_factory.mktemp("straight"))
    opts = RUN + ["DATASETS.ROOT", root]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _train_tool(opts + ["WORKSPACE", ws]) == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return ws, opts


def _train_tool(opts, resume=False):
    argv = ["--config", CONFIG] + (["--resume"] if resume else []) + list(opts)
    return tools_helpers.load_tool("train").main(argv)


def _spawn(opts, rename_delay=None):
    """tools/train.py in a subprocess; `rename_delay` seconds hold every checkpoint between its
    write and its rename (tests/testutils/slow_checkpoint_rename.py)."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config", CONFIG, *opts]
    if rename_delay is not None:
        helper = os.path.join(ROOT, "tests", "testutils", "slow_checkpoint_rename.py")
        cmd = [sys.executable, helper, str(rename_delay)] + cmd[1:]
    full_env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(proc, condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (status {proc.returncode}) first:\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the training subprocess")


def _logged_iters(ws):
    path = os.path.join(ws, "log", "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        lines = [json.loads(x) for x in f.read().splitlines() if x.endswith("}")]
    return [r["iter"] for r in lines if r["type"] == "train"]


def _assert_same_final_weights(ws_a, ws_b):
    a = _weights(os.path.join(ws_a, "final", "model_final.pth"))
    b = _weights(os.path.join(ws_b, "final", "model_final.pth"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@real
@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_uninterrupted(straight, tmp_path, _tool_env):
    ref_ws, opts = straight
    ws = str(tmp_path / "ws")
    # CHECKPOINT_PERIOD 100: the only checkpoint before the end is the one SIGTERM makes
    proc = _spawn(opts + ["WORKSPACE", ws, "SOLVER.CHECKPOINT_PERIOD", "100"])
    _wait_for(proc, lambda: 2 in _logged_iters(ws))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    stopped_at = max(_logged_iters(ws))
    assert 2 <= stopped_at < 6
    assert f"SIGTERM received: stopped after iteration {stopped_at}" in err
    pointer = open(os.path.join(ws, "model", "last_checkpoint")).read().strip()
    assert pointer == f"model_{stopped_at:07d}.pth"
    ckpt = torch.load(os.path.join(ws, "model", pointer), weights_only=False)
    assert ckpt["iteration"] == stopped_at and "MAX_ITER: 6" in ckpt["cfg"]
    assert _train_tool(opts + ["WORKSPACE", ws], resume=True) == 0
    assert _logged_iters(ws) == [1, 2, 3, 4, 5, 6], "resumed right after the saved iteration"
    _assert_same_final_weights(ref_ws, ws)


@real
@pytest.mark.slow
def test_sigkill_during_checkpoint_write_leaves_a_resumable_run(straight, tmp_path, _tool_env):
    """SIGKILL while the checkpoint of iteration 4 sits written-but-not-renamed (the rename is
    held back 3 s): the run resumes from iteration 2 and ends with the uninterrupted
    weights; the stray temporary file is removed."""
    ref_ws, opts = straight
    ws = str(tmp_path / "ws")
    model_dir = os.path.join(ws, "model")
    proc = _spawn(
        opts + ["WORKSPACE", ws, "SOLVER.CHECKPOINT_PERIOD", "2"],
        rename_delay=3,
    )
    _wait_for(proc, lambda: glob.glob(os.path.join(model_dir, ".model_0000004.pth.*.tmp")))
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert open(os.path.join(model_dir, "last_checkpoint")).read().strip() == "model_0000002.pth"
    assert not os.path.exists(os.path.join(model_dir, "model_0000004.pth"))
    assert glob.glob(os.path.join(model_dir, ".*.tmp")), "the kill left the temporary file"
    assert _train_tool(opts + ["WORKSPACE", ws, "SOLVER.CHECKPOINT_PERIOD", "2"], resume=True) == 0
    assert glob.glob(os.path.join(model_dir, ".*.tmp")) == []
    log = open(os.path.join(ws, "log", "log.txt")).read()
    assert "at iteration 2" in log  # "Resuming from .../model_0000002.pth at iteration 2"
    _assert_same_final_weights(ref_ws, ws)


@real
@pytest.mark.slow
def test_architecture_mismatch_is_refused_with_the_config_difference(
    straight, tmp_path, capsys, _tool_env
):
    ref_ws, opts = straight
    weight = os.path.join(ref_ws, "final", "model_final.pth")
    # MODEL.WEIGHT from a run of another architecture
    status = _train_tool(
        opts
        + ["WORKSPACE", str(tmp_path / "w"), "MODEL.WEIGHT", weight]
        + ["MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "48"]
    )
    err = capsys.readouterr().err
    assert status == 2, err
    assert "do not match the model architecture" in err and "roi_heads.box_head" in err
    assert "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM: 32 in the checkpoint, 48 now" in err, err
    # --resume with a changed architecture (a second mask-head conv: new keys)
    status = _train_tool(
        opts
        + ["WORKSPACE", ref_ws, "SOLVER.MAX_ITER", "8"]
        + ["MODEL.ROI_MASK_HEAD.CONV_LAYERS", "(8, 8)"],
        resume=True,
    )
    err = capsys.readouterr().err
    assert status == 2, err
    assert "missing in checkpoint" in err and "model_0000006.pth" in err
    assert "MODEL.ROI_MASK_HEAD.CONV_LAYERS: [8] in the checkpoint, [8, 8] now" in err, err


@real
@pytest.mark.slow
def test_kill_before_the_final_model_is_written_is_repaired_on_resume(
    straight, tmp_path, _tool_env
):
    """A kill after the last periodic checkpoint but before final/model_final.pth: --resume has
    nothing to train and writes the final model from that checkpoint."""
    ref_ws, opts = straight
    ws = str(tmp_path / "ws")
    shutil.copytree(ref_ws, ws)
    os.remove(os.path.join(ws, "final", "model_final.pth"))
    assert _train_tool(opts + ["WORKSPACE", ws], resume=True) == 0
    final = torch.load(os.path.join(ws, "final", "model_final.pth"), weights_only=False)
    assert final["iteration"] == 6
    _assert_same_final_weights(ref_ws, ws)


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    """atomic_write's temporary file starts 0600 (mkstemp); the result must be what a plain
    open() gives under the process's umask, so other users of a shared disk can read it."""
    import detection.engine.checkpointer as ck

    path = Checkpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path)).save("model_1", iteration=1)
    expected = 0o666 & ~ck._UMASK
    assert os.stat(path).st_mode & 0o777 == expected
    assert os.stat(tmp_path / "last_checkpoint").st_mode & 0o777 == expected
