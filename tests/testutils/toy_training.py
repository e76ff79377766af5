"""The training-loop tests' stand-ins: a tiny model, its batches and a short SOLVER config."""

import gc
from pathlib import Path

import torch
from torch import nn

from detection.config import cfg as _defaults


class Images:
    """Stand-in for ImageList: a tensor with `.to(device)`."""

    def __init__(self, tensors):
        self.tensors = tensors

    def to(self, device):
        return Images(self.tensors.to(device))


class Target:
    def __init__(self, y):
        self.y = y

    def to(self, device):
        return Target(self.y.to(device))


class ToyModel(nn.Module):
    """Returns two losses; dropout makes the result depend on the torch RNG."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.norm = nn.GroupNorm(2, 8)
        self.conv_offset = nn.Linear(8, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, images, targets):
        x = self.conv_offset(self.drop(self.norm(self.fc(images.tensors))))
        y = torch.stack([t.y for t in targets])
        return {"loss_reg": (x.squeeze(1) - y).pow(2).mean(), "loss_l1": 0.1 * x.abs().mean()}


def toy_loader(start_iter, max_iter, batch=2):
    """Like make_data_loader(start_iter=...): batch i depends only on i."""
    for i in range(start_iter, max_iter):
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(batch, 4, generator=g)
        yield (
            Images(x),
            tuple(Target(v) for v in x.sum(1)),
            tuple(range(i * batch, i * batch + batch)),
        )


def toy_cfg(workspace, **solver):
    c = _defaults.clone()
    c.WORKSPACE = str(workspace)
    c.SOLVER.BASE_LR = 0.05
    c.SOLVER.WARMUP_ITERS = 3
    c.SOLVER.STEPS = (6,)
    c.SOLVER.MAX_ITER = 10
    c.SOLVER.CHECKPOINT_PERIOD = 2
    c.SOLVER.CHECKPOINT_KEEP = 2
    c.SOLVER.SAVE_PERIOD = 5
    c.SOLVER.LOG_PERIOD = 3
    c.SOLVER.CLIP_GRAD_NORM = 1.0
    for k, v in solver.items():
        c.SOLVER[k] = v
    return c


def train_toy_ddp(rank, steps, nan_rank=-1, nan_step=-1, fail=False):
    """`train_step` on the toy model under `distributed_model` for `steps` steps, this rank's
    share of each batch; rank `nan_rank`'s targets are NaN at step `nan_step`. Returns each
    step's problem and the weights after it. The DDP model ends with this call, as in
    tools/train.py's `train`; with `fail`, a RuntimeError after the last step instead, the
    model in this frame (a training that fails)."""
    from detection.engine.setup import distributed_model
    from detection.engine.train_loop import train_step

    torch.manual_seed(rank)  # different replicas: DDP must broadcast rank 0's weights
    model = distributed_model(ToyModel(), torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    problems, weights = [], []
    for step, (images, targets, _) in enumerate(toy_loader(0, steps)):
        shard = slice(rank, rank + 1)
        images, targets = Images(images.tensors[shard]), targets[shard]
        if rank == nan_rank and step == nan_step:
            targets = tuple(Target(torch.full_like(t.y, float("nan"))) for t in targets)
        _, problem = train_step(model, images, targets, opt, None, torch.device("cpu"), None, 0.0)
        problems.append(problem)
        weights.append({k: v.clone() for k, v in model.module.state_dict().items()})
    if fail:
        raise RuntimeError("the toy training fails after its last step")
    return problems, weights


def ddp_nan_worker(rank, world_size, init_file, nan_rank, nan_step, steps, out):
    """One rank of a gloo run of `train_toy_ddp`. Saves each step's problem and the weights
    after it to `out`/rank<rank>.pt. (torch.multiprocessing.spawn target: importable here.)"""
    import torch.distributed as dist

    from detection.utils import comm

    comm.init_process_group("gloo", f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        problems, weights = train_toy_ddp(rank, steps, nan_rank, nan_step)
        torch.save({"problems": problems, "weights": weights}, f"{out}/rank{rank}.pt")
        dist.barrier()
    finally:
        comm.destroy_process_group()


def gloo_threads():
    """Names of this process's threads that gloo started (Linux: /proc/self/task/*/comm)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # a thread that ended since the listing
            continue
    return sorted(n for n in names if "gloo" in n)


def ddp_teardown_worker(rank, init_file, out, fail):
    """A one-rank gloo group, two steps of `train_toy_ddp` (failing after them with `fail`) and
    the group destroyed in a `finally`, as tools/train.py ends. Saves gloo's thread names while
    the group lives and after `comm.destroy_process_group` to `out`. (spawn target.)"""
    from detection.utils import comm

    gc.disable()  # whether the collector ran between the training and the destroy is chance
    comm.init_process_group("gloo", f"file://{init_file}", rank=rank, world_size=1)
    threads = {}
    try:
        try:
            train_toy_ddp(rank, 2, fail=fail)
        finally:
            threads["living"] = gloo_threads()
            comm.destroy_process_group()
            threads["destroyed"] = gloo_threads()
    except RuntimeError:
        if not fail:
            raise
    torch.save(threads, out)
