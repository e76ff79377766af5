"""The training-loop tests' stand-ins: a tiny model, its batches and a short SOLVER config."""

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


def ddp_nan_worker(rank, world_size, init_file, nan_rank, nan_step, steps, out):
    """One rank of a gloo run of `train_step` on the toy model under `distributed_model`: rank
    `nan_rank`'s targets are NaN at step `nan_step`. Saves each step's problem and the weights
    after it to `out`/rank<rank>.pt. (torch.multiprocessing.spawn target: importable here.)"""
    import torch.distributed as dist

    from detection.engine.setup import distributed_model
    from detection.engine.train_loop import train_step

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.manual_seed(rank)  # different replicas: DDP must broadcast rank 0's weights
        model = distributed_model(ToyModel(), torch.device("cpu"))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        problems, weights = [], []
        for step, (images, targets, _) in enumerate(toy_loader(0, steps)):
            shard = slice(rank, rank + 1)
            images, targets = Images(images.tensors[shard]), targets[shard]
            if rank == nan_rank and step == nan_step:
                targets = tuple(Target(torch.full_like(t.y, float("nan"))) for t in targets)
            _, problem = train_step(
                model, images, targets, opt, None, torch.device("cpu"), None, 0.0
            )
            problems.append(problem)
            weights.append({k: v.clone() for k, v in model.module.state_dict().items()})
        torch.save({"problems": problems, "weights": weights}, f"{out}/rank{rank}.pt")
        # both ranks done before either tears gloo down: once (2026-12-04, torch 2.11, full suite)
        # rank 1 aborted at exit ("terminate called without an active exception"); not reproduced
        dist.barrier()
    finally:
        dist.destroy_process_group()
