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
