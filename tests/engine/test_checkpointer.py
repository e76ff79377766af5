"""Checkpointer: round trip, atomic writes, pointer, rotation, architecture mismatch, RNG state."""

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

import detection.engine.checkpointer as ckpt_mod
from detection.engine.checkpointer import POINTER_NAME, Checkpointer
from detection.utils.seed import get_rng_state, seed_all, set_rng_state


def _setup(tmp_path, keep=0):
    model = nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2], gamma=0.1)
    return model, opt, sched, Checkpointer(model, opt, sched, save_dir=str(tmp_path), keep=keep)


def _step(model, opt, sched):
    opt.zero_grad()
    model(torch.randn(5, 3)).pow(2).sum().backward()
    opt.step()
    sched.step()


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    for _ in range(3):
        _step(model, opt, sched)
    path = ck.save("model_0000003", iteration=3, cfg="A: 1\n")
    assert ck.get_checkpoint_file() == path

    model2, opt2, sched2, ck2 = _setup(tmp_path)
    rest = ck2.load(ck2.get_checkpoint_file(), resume=True)
    assert rest["iteration"] == 3 and rest["cfg"] == "A: 1\n"
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert sched2.state_dict() == sched.state_dict()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p2]["momentum_buffer"])


def _load_weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_interrupted_before_rename_keeps_previous(tmp_path, monkeypatch):
    model, opt, sched, ck = _setup(tmp_path)
    first = ck.save("model_0000001", iteration=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt, sched)

    def crash(src, dst):
        raise KeyboardInterrupt("killed before rename")

    monkeypatch.setattr(ckpt_mod.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_0000002", iteration=2)
    monkeypatch.undo()

    assert not os.path.exists(tmp_path / "model_0000002.pth")
    assert ck.get_checkpoint_file() == first
    saved = _load_weights(first)
    for k, v in before.items():
        assert torch.equal(saved[k], v), k
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == [], (
        "temporary files must be cleaned up"
    )


def test_interrupted_overwrite_of_same_name_keeps_old_content(tmp_path, monkeypatch):
    model, opt, sched, ck = _setup(tmp_path)
    path = ck.save("model_final", iteration=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt, sched)
    real_save = torch.save

    def partial_save(obj, f):  # half a file written, then the process dies
        real_save(obj, f)
        f.truncate(10)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt_mod.torch, "save", partial_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_final", iteration=2)
    monkeypatch.undo()
    saved = _load_weights(path)
    for k, v in before.items():
        assert torch.equal(saved[k], v), k
    assert ck.get_checkpoint_file() == path


def test_pointer_written_after_checkpoint(tmp_path, monkeypatch):
    """A crash while writing the pointer leaves the old pointer (naming a complete file)."""
    model, opt, sched, ck = _setup(tmp_path)
    first = ck.save("model_0000001", iteration=1)
    real_replace = os.replace

    def crash_on_pointer(src, dst):
        if os.path.basename(dst) == POINTER_NAME:
            raise KeyboardInterrupt("killed before pointer rename")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", crash_on_pointer)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_0000002", iteration=2)
    monkeypatch.undo()
    assert ck.get_checkpoint_file() == first
    assert torch.load(tmp_path / "model_0000002.pth", weights_only=False)["iteration"] == 2


def test_rotation_keeps_newest(tmp_path):
    model, opt, sched, ck = _setup(tmp_path, keep=2)
    for it in (10, 20, 30):
        ck.save(f"model_{it:07d}", iteration=it)
    names = sorted(p for p in os.listdir(tmp_path) if p.endswith(".pth"))
    assert names == ["model_0000020.pth", "model_0000030.pth"]
    assert ck.get_checkpoint_file().endswith("model_0000030.pth")


def test_bare_state_dict_and_ddp_prefix(tmp_path):
    model, *_ = _setup(tmp_path)
    path = tmp_path / "bare.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    model2, opt2, sched2, ck2 = _setup(tmp_path)
    lr_before = opt2.param_groups[0]["lr"]
    assert ck2.load(str(path)) == {}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == lr_before


def test_weights_only_load_skips_optimizer(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    for _ in range(3):
        _step(model, opt, sched)
    path = ck.save("model_0000003", iteration=3)
    model2, opt2, sched2, ck2 = _setup(tmp_path)
    rest = ck2.load(path, resume=False)
    assert "optimizer" not in rest and "scheduler" not in rest
    assert opt2.state_dict()["state"] == {}
    assert sched2.last_epoch == 0


def test_architecture_mismatch_names_keys(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    path = ck.save("model_0000001", iteration=1)
    other = nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 5), nn.Linear(5, 1))
    with pytest.raises(ValueError) as err:
        Checkpointer(other).load(path)
    msg = str(err.value)
    assert "2.weight: checkpoint (2, 4) vs model (5, 4)" in msg
    assert "missing in checkpoint (2): 3.bias, 3.weight" in msg
    assert "model_0000001.pth" in msg


def test_resume_without_optimizer_state_fails(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="no optimizer state"):
        ck.load(str(path), resume=True)


def test_missing_file(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    assert ck.get_checkpoint_file() is None and not ck.has_checkpoint()
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ck.load(str(tmp_path / "nope.pth"))


def _draws():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def test_rng_state_restore(tmp_path):
    seed_all(123)
    _draws()
    state = get_rng_state()
    expected = _draws()
    _draws()
    # through a checkpoint file, as the trainer stores it
    model, opt, sched, ck = _setup(tmp_path)
    path = ck.save("model_0000001", rng=state)
    seed_all(999)
    set_rng_state(ck.load(path)["rng"])
    assert _draws() == expected


def test_rng_state_missing_key():
    with pytest.raises(KeyError, match="numpy"):
        set_rng_state({"python": random.getstate(), "torch": torch.get_rng_state()})
