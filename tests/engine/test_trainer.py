"""The training loop with a stand-in model and loader: outputs, logging, and exact resume."""

import glob
import json
import logging
import os

import pytest
import torch

from detection.config import ConfigError, validate_config
from detection.engine.checkpointer import Checkpointer
from detection.engine.trainer import TrainOptions, do_train
from detection.solver import build_lr_scheduler, build_optimizer
from detection.utils.seed import seed_all
from testutils.toy_training import ToyModel as _Model
from testutils.toy_training import toy_cfg as _cfg
from testutils.toy_training import toy_loader as _loader


def _run(c, resume=False):
    """What tools/train.py does, minus the data pipeline and the real model."""
    seed_all(c.SEED)
    model = _Model()
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
    device = torch.device("cpu")
    options = TrainOptions.from_config(c, device)
    do_train(
        model,
        _loader(start, c.SOLVER.MAX_ITER),
        opt,
        sched,
        ck,
        device,
        options,
        start_iter=start,
        rng_state=rng,
        logger=logging.getLogger("test.trainer"),
    )
    return model


def test_outputs_and_logs(tmp_path):
    c = _cfg(tmp_path)
    evals = []
    seed_all(0)
    model = _Model()
    opt = build_optimizer(c, model)
    sched = build_lr_scheduler(c, opt)
    ck = Checkpointer(model, opt, sched, save_dir=str(tmp_path / "model"), keep=2)
    c.SOLVER.TEST_PERIOD = 4
    options = TrainOptions.from_config(c, torch.device("cpu"))

    def test_fn(m, it):  # like engine.inference: switches the model to eval mode
        m.eval()
        evals.append(it)
        return {"shapes_val/bbox": {"AP": 0.25 * it}}

    do_train(model, _loader(0, 10), opt, sched, ck, torch.device("cpu"), options, test_fn=test_fn)
    assert model.training, "the loop must put the model back in train mode after evaluation"
    assert evals == [4, 8]
    assert sorted(os.listdir(tmp_path / "model")) == [
        "last_checkpoint",
        "model_0000008.pth",
        "model_0000010.pth",
    ]
    assert (tmp_path / "model" / "last_checkpoint").read_text().strip() == "model_0000010.pth"
    assert sorted(os.listdir(tmp_path / "save")) == ["model_0000005.pth", "model_0000010.pth"]
    final = torch.load(tmp_path / "final" / "model_final.pth", weights_only=False)
    assert (
        final["iteration"] == 10
        and "optimizer" not in final
        and final["cfg"].startswith(c.dump()[:20])
    )
    for k, v in model.state_dict().items():
        assert torch.equal(final["model"][k], v), k
    ckpt = torch.load(tmp_path / "model" / "model_0000010.pth", weights_only=False)
    assert {"model", "optimizer", "scheduler", "iteration", "rng", "cfg"} <= set(ckpt)
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}

    records = [
        json.loads(line) for line in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r["type"] == "train"]
    assert [r["iter"] for r in train] == [1, 3, 6, 9, 10]
    for key in (
        "loss",
        "loss_reg",
        "loss_l1",
        "loss_avg",
        "lr",
        "time",
        "data",
        "eta_seconds",
        "max_mem_mb",
    ):
        assert key in train[-1], key
    # warmup at iteration 0 (logged as iter 1): BASE_LR * WARMUP_FACTOR; after step 6: x GAMMA
    assert train[0]["lr"] == pytest.approx(0.05 / 3)
    assert train[-1]["lr"] == pytest.approx(0.05 * 0.1)
    assert train[-1]["loss_avg"] == pytest.approx(
        train[-1]["loss_reg_avg"] + train[-1]["loss_l1_avg"]
    )
    assert [r["shapes_val/bbox/AP"] for r in records if r["type"] == "eval"] == [1.0, 2.0]
    assert glob.glob(str(tmp_path / "log" / "events.out.tfevents.*")), "TensorBoard events missing"


def test_resume_matches_straight_run(tmp_path):
    straight = _run(_cfg(tmp_path / "a"))
    half = _cfg(tmp_path / "b", MAX_ITER=10)
    half.SOLVER.MAX_ITER = 4  # stop after 4 of 10 iterations (the schedule keys are unchanged)
    _run(half)
    resumed = _run(_cfg(tmp_path / "b"), resume=True)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_without_rng_differs(tmp_path):
    """The RNG restore is what makes the resume exact (dropout draws from the torch RNG)."""
    straight = _run(_cfg(tmp_path / "a"))
    half = _cfg(tmp_path / "b")
    half.SOLVER.MAX_ITER = 4
    _run(half)
    pointer = tmp_path / "b" / "model" / "model_0000004.pth"
    data = torch.load(pointer, weights_only=False)
    data["rng"]["torch"] = torch.manual_seed(12345).get_state()
    torch.save(data, pointer)
    resumed = _run(_cfg(tmp_path / "b"), resume=True)
    assert not torch.equal(straight.fc.weight, resumed.fc.weight)


def test_non_finite_loss_raises(tmp_path):
    class _Bad(_Model):
        def forward(self, images, targets):
            return {"loss_nan": self.fc.weight.sum() * float("nan")}

    c = _cfg(tmp_path)
    model = _Bad()
    opt = build_optimizer(c, model)
    ck = Checkpointer(model, opt, None, save_dir=str(tmp_path / "model"))
    with pytest.raises(FloatingPointError, match="loss_nan"):
        do_train(
            model,
            _loader(0, 10),
            opt,
            build_lr_scheduler(c, opt),
            ck,
            torch.device("cpu"),
            TrainOptions.from_config(c, torch.device("cpu")),
        )


def test_solver_keys_are_checked_once_by_the_config_loader(tmp_path):
    """The loop's keys are validated when the config is loaded (`config_problems`), not again
    by TrainOptions."""
    c = _cfg(tmp_path, CHECKPOINT_PERIOD=0)
    c.SOLVER.AMP.DTYPE = "float8"
    with pytest.raises(ConfigError) as err:
        validate_config(c, world_size=1)
    assert "SOLVER.CHECKPOINT_PERIOD" in str(err.value) and "SOLVER.AMP.DTYPE" in str(err.value)
    c = _cfg(tmp_path)
    c.SOLVER.AMP.DTYPE = "float16"
    c.SOLVER.AMP.ENABLED = True
    assert TrainOptions.from_config(c, torch.device("cpu")).amp_dtype is None  # CPU: AMP off
