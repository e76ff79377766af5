"""The box predictor: fc features -> class logits and class-specific box deltas."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from detection.layers.misc import Linear


class BoxPredictor(nn.Module):
    """`Tensor[R, D]` -> class logits `Tensor[R, C+1]` and deltas `Tensor[R, 4 * (C+1)]`
    (`Tensor[R, 8]` when class agnostic: background and foreground)."""

    def __init__(self, in_dim: int, num_classes: int, cls_agnostic: bool = False) -> None:
        super().__init__()
        self.cls_score = Linear(in_dim, num_classes)
        self.bbox_pred = Linear(in_dim, 4 * (2 if cls_agnostic else num_classes))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)
