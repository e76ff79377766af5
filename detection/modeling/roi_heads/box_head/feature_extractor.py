"""The box head's feature extractor: RoI pooling on the reduced C5 map, then two fc layers."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from detection.layers.misc import Linear
from detection.modeling.roi_heads.poolers import Pooler


class BoxHeadFeatureExtractor(nn.Module):
    """`forward(reduced Tensor[N, C, H, W], rois Tensor[R, 5]) -> Tensor[R, mlp_dim]`: pooling to
    `P x P`, flatten, fc6 + ReLU, fc7 + ReLU. `in_channels` is C (the reduced C5 width)."""

    def __init__(self, *, in_channels: int, pooler: Pooler, mlp_dim: int) -> None:
        super().__init__()
        self.pooler = pooler
        p = pooler.output_size
        self.out_dim = mlp_dim
        self.fc6 = Linear(in_channels * p * p, mlp_dim)
        self.fc7 = Linear(mlp_dim, mlp_dim)
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward(self, reduced: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        x = self.pooler(reduced, rois).flatten(1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))
