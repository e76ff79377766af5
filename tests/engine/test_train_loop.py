"""The loop alone: what it calls, in which order, with a recording hook and the toy model."""

from pathlib import Path
import warnings

import pytest
import torch
from torch import nn

from detection.engine.setup import distributed_model, has_running_stats
from detection.engine.train_loop import HookBase, TrainLoop
from detection.layers import FrozenBatchNorm2d
from detection.utils import comm
from testutils.toy_training import ToyModel, ddp_nan_worker, ddp_teardown_worker, toy_loader


class _Recorder(HookBase):
    def __init__(self, events, fail_at=None):
        self.events = events
        self.fail_at = fail_at

    def before_train(self, loop):
        self.events.append(("before_train", loop.model.training))

    def after_update(self, loop, state):
        # before the schedule advances: the optimizer still has this step's learning rate
        assert loop.model.training
        self.events.append(("after_update", state.it, loop.optimizer.param_groups[0]["lr"]))

    def after_step(self, loop, state):
        self.events.append(("after_step", state.it, loop.optimizer.param_groups[0]["lr"]))
        if state.it == self.fail_at:
            raise RuntimeError("stop")

    def after_train(self, loop):
        self.events.append(("after_train",))


def _loop(events, start=0, max_iter=3, fail_at=None):
    torch.manual_seed(0)
    model = ToyModel().eval()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5**i)
    return TrainLoop(
        model=model,
        data_loader=toy_loader(start, max_iter),
        optimizer=opt,
        scheduler=sched,
        device=torch.device("cpu"),
        max_iter=max_iter,
        start_iter=start,
        hooks=[_Recorder(events, fail_at)],
    )


def test_hooks_see_each_iteration_before_and_after_the_schedule_advances():
    events = []
    _loop(events).run()
    assert events == [
        ("before_train", False),  # then the loop puts the model in training mode
        ("after_update", 1, 1.0),
        ("after_step", 1, 0.5),
        ("after_update", 2, 0.5),
        ("after_step", 2, 0.25),
        ("after_update", 3, 0.25),
        ("after_step", 3, 0.125),
        ("after_train",),
    ]


def test_a_resumed_loop_counts_from_start_iter_and_after_train_runs_on_errors():
    events = []
    with pytest.raises(RuntimeError, match="stop"):
        _loop(events, start=2, max_iter=6, fail_at=4).run()
    assert [e[1] for e in events if e[0] == "after_step"] == [3, 4]
    assert events[-1] == ("after_train",)


def test_a_short_loader_is_an_error():
    loop = _loop([], max_iter=3)
    loop.max_iter = 5  # the loader only has batches for 3 iterations
    with pytest.raises(RuntimeError, match="ended at iteration 3 < SOLVER.MAX_ITER"):
        loop.run()


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    """Two gloo processes; rank 1's loss is NaN at step 2 only. Every rank runs the backward
    (DDP's all-reduce needs them all), then both agree after it: no update on either rank, the
    same message kind, and the replicas stay identical through the steps before and after."""
    torch.multiprocessing.spawn(
        ddp_nan_worker,
        args=(2, str(tmp_path / "rendezvous"), 1, 2, 5, str(tmp_path)),
        nprocs=2,
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert [p is None for p in r0["problems"]] == [True, True, False, True, True]
    assert "non-finite loss on another rank" in r0["problems"][2]
    assert "loss_reg=nan" in r1["problems"][2] and r1["problems"][1] is None
    for a, b in zip(r0["weights"], r1["weights"]):
        assert all(torch.equal(a[k], b[k]) for k in a), "the replicas diverged"
    assert all(torch.equal(r0["weights"][1][k], r0["weights"][2][k]) for k in r0["weights"][1])
    assert not torch.equal(r0["weights"][2]["fc.weight"], r0["weights"][3]["fc.weight"])
    assert not torch.equal(r0["weights"][0]["fc.weight"], r0["weights"][1]["fc.weight"])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names from Linux /proc")
@pytest.mark.parametrize("fail", [False, True], ids=["returns", "raises"])
def test_the_process_group_ends_at_destroy_after_ddp(tmp_path, fail):
    """The group, and gloo's threads, end at `comm.destroy_process_group` after a DDP training,
    one that returns and one whose exception passes through the destroy's `finally`. They lived
    on: in torch.distributed.nn's default arguments (bound to the world group when DDP's
    constructor imports the module under one), in the DDP wrapper's reference cycle, and in the
    frames of the exception's traceback; where the group then ended (a reducer freed later, or
    interpreter shutdown) a gloo thread freeing a tensor hung or aborted the process
    (RELIABILITY.md)."""
    out = tmp_path / "threads.pt"
    torch.multiprocessing.spawn(
        ddp_teardown_worker, args=(str(tmp_path / "rendezvous"), str(out), fail), nprocs=1
    )
    threads = torch.load(out)
    assert threads["living"], "no gloo thread seen while the group lives: the check sees nothing"
    assert threads["destroyed"] == [], f"gloo threads outlive the group: {threads['destroyed']}"


def _buffer_broadcast_flags():
    """DDP's forward buffer broadcast flag for a GroupNorm and a BatchNorm model; warnings from
    DDP's constructor are errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        cpu = torch.device("cpu")
        gn = distributed_model(nn.Sequential(nn.Linear(2, 4), nn.GroupNorm(2, 4)), cpu)
        bn = distributed_model(nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4)), cpu)
    return [getattr(m, "forward_sync_buffers", getattr(m, "broadcast_buffers", None))
            for m in (gn, bn)]  # fmt: skip


def test_distributed_model_uses_the_buffer_option_this_torch_knows(tmp_path):
    """One gloo rank in this process: no deprecation warning from DDP (torch 2.13 warns at
    `broadcast_buffers`), and the forward's buffer broadcast is on only with a BatchNorm. The
    DDP models end before the group does (`comm.destroy_process_group`)."""
    comm.init_process_group("gloo", f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        flags = _buffer_broadcast_flags()
    finally:
        comm.destroy_process_group()
    assert flags == [False, True]


def test_ddp_broadcasts_buffers_only_where_training_changes_them():
    dense = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), FrozenBatchNorm2d(8))
    assert not has_running_stats(dense)
    assert has_running_stats(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
    assert not has_running_stats(nn.BatchNorm2d(8, track_running_stats=False))
    assert has_running_stats(nn.InstanceNorm2d(8, track_running_stats=True))
