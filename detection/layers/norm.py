"""Normalisation factory: "FrozenBN", "BN" or "GN" by name."""

from __future__ import annotations

from torch import nn

from detection.layers.batch_norm import FrozenBatchNorm2d

NORMS = ("FrozenBN", "BN", "GN")


def get_norm(norm: str, num_channels: int, num_groups: int = 32, eps: float = 1e-5) -> nn.Module:
    """A normalisation layer over `num_channels` channels of a `Tensor[N, C, H, W]`.

    Args:
        norm: "FrozenBN" (fixed statistics, `FrozenBatchNorm2d`), "BN" (`nn.BatchNorm2d`) or
            "GN" (`nn.GroupNorm` with `num_groups` groups).
        num_groups: GroupNorm groups; must divide `num_channels` (`build_resnet_backbone` checks
            MODEL.GROUP_NORM.NUM_GROUPS against the backbone's widths).
        eps: epsilon of the normalisation.
    """
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(num_channels, eps=eps)
    if norm == "BN":
        return nn.BatchNorm2d(num_channels, eps=eps)
    if norm == "GN":  # nn.GroupNorm rejects num_groups not dividing num_channels
        return nn.GroupNorm(num_groups, num_channels, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
