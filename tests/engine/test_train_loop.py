"""The loop alone: what it calls, in which order, with a recording hook and the toy model."""

import pytest
import torch

from detection.engine.train_loop import HookBase, TrainLoop
from testutils.toy_training import ToyModel, toy_loader


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
