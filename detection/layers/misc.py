"""Thin wrappers of `nn.Conv2d`, `nn.ConvTranspose2d` and `nn.Linear` that accept empty batches.

Current PyTorch handles `N = 0` for most of these already; the wrappers make the guarantee explicit
(and cover `Linear` on `Tensor[0, C]` and transposed convs on `Tensor[0, C, H, W]`) so RoI heads
can run on images without proposals. Each returns a tensor of the correct output shape that is
still connected to the module's parameters, so backward works and DDP sees every parameter used.
"""

from __future__ import annotations

from typing import Iterable, Union

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import guard_or_true


def zero_connected(
    *sources: Union[nn.Module, torch.Tensor, Iterable[torch.Tensor]],
) -> torch.Tensor:
    """A scalar 0 that depends on every tensor in `sources` and on every parameter that requires
    grad of every module in `sources` (the one "connected zero" of the package).

    Losses that do not apply in a step (no positives, no ground truth) return this, and empty
    batches get outputs built on it, so backward still reaches the parameters that would have
    produced them (DistributedDataParallel needs that).
    """
    total = None
    for src in sources:
        if isinstance(src, nn.Module):
            items = [p for p in src.parameters() if p.requires_grad]
        elif isinstance(src, torch.Tensor):
            items = [src]
        else:
            items = list(src)
        for t in items:
            term = t.sum() * 0.0
            total = term if total is None else total + term
    if total is None:
        raise ValueError("zero_connected needs a tensor or a parameter that requires grad")
    return total


def _connected_empty(shape, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """`x.new_zeros(shape)`, connected to the module's parameters when any requires grad."""
    out = x.new_zeros(shape)
    if any(p.requires_grad for p in module.parameters()):
        out = out + zero_connected(module)
    return out


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that maps `Tensor[0, C, H, W]` to `Tensor[0, Cout, Ho, Wo]`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if guard_or_true(x.numel() > 0):  # True for an unbacked size (torch.export)
            return super().forward(x)
        out_hw = [
            (i + 2 * p - (d * (k - 1) + 1)) // s + 1
            for i, p, d, k, s in zip(
                x.shape[-2:], self.padding, self.dilation, self.kernel_size, self.stride
            )
        ]
        return _connected_empty([x.shape[0], self.out_channels] + out_hw, x, self)


class ConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` that maps `Tensor[0, C, H, W]` to `Tensor[0, Cout, Ho, Wo]`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if guard_or_true(x.numel() > 0):  # True for an unbacked size (torch.export)
            return super().forward(x)
        out_hw = [
            (i - 1) * s - 2 * p + (d * (k - 1) + 1) + op
            for i, p, d, k, s, op in zip(
                x.shape[-2:],
                self.padding,
                self.dilation,
                self.kernel_size,
                self.stride,
                self.output_padding,
            )
        ]
        return _connected_empty([x.shape[0], self.out_channels] + out_hw, x, self)


class Linear(nn.Linear):
    """`nn.Linear` that maps `Tensor[0, in]` to `Tensor[0, out]` (connected to the weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if guard_or_true(x.numel() > 0):  # True for an unbacked size (torch.export)
            return super().forward(x)
        return _connected_empty(list(x.shape[:-1]) + [self.out_features], x, self)
