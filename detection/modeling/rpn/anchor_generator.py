"""Anchors of several sizes and aspect ratios on one feature map of a given stride.

Continuous pixel coordinates (no "+1"): feature location (i, j) covers the input pixels
`[j*stride, (j+1)*stride) x [i*stride, (i+1)*stride)`, and its anchors are centred on that block's
centre `(j*stride + stride/2, i*stride + stride/2)`. An anchor of size s and aspect ratio
r = height / width has area s^2: width `s / sqrt(r)`, height `s * sqrt(r)`.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from detection.structures.bounding_box import BoxList


def generate_cell_anchors(
    stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]
) -> torch.Tensor:
    """`Tensor[len(sizes) * len(aspect_ratios), 4]` anchors centred at (stride/2, stride/2).

    Order: sizes outer, ratios inner. Ratio r = height / width; area = size^2.
    """
    c = stride / 2.0
    out = []
    for s in sizes:
        for r in aspect_ratios:
            w = s / math.sqrt(r)
            h = s * math.sqrt(r)
            out.append([c - w / 2, c - h / 2, c + w / 2, c + h / 2])
    return torch.tensor(out, dtype=torch.float32)


class AnchorGenerator(nn.Module):
    """Anchors for one feature map: `A = len(sizes) * len(aspect_ratios)` per location.

    `forward(image_sizes, feature)` returns one BoxList per image with `H * W * A` anchors in
    (y, x, a) order -- the order of the RPN head's outputs after permuting to `[N, H, W, A]` --
    and a bool field "visibility" (anchor inside the image within `straddle_thresh` pixels; all
    True when `straddle_thresh < 0`).
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        stride: int = 16,
        straddle_thresh: float = 0,
    ) -> None:
        super().__init__()
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        if not sizes or not aspect_ratios:
            raise ValueError("sizes and aspect_ratios must be non-empty")
        self.stride = stride
        self.straddle_thresh = straddle_thresh
        self.register_buffer(
            "cell_anchors", generate_cell_anchors(stride, sizes, aspect_ratios), persistent=False
        )

    def num_anchors_per_location(self) -> int:
        return self.cell_anchors.shape[0]

    def grid_anchors(self, height: int, width: int) -> torch.Tensor:
        """`Tensor[height * width * A, 4]` anchors of a `height x width` map."""
        device = self.cell_anchors.device
        ys = torch.arange(height, dtype=torch.float32, device=device) * self.stride
        xs = torch.arange(width, dtype=torch.float32, device=device) * self.stride
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)

    def forward(self, image_sizes: List[Tuple[int, int]], feature: torch.Tensor) -> List[BoxList]:
        """`image_sizes`: (h, w) per image; `feature`: `Tensor[N, C, H, W]`."""
        anchors = self.grid_anchors(feature.shape[-2], feature.shape[-1])
        out = []
        for h, w in image_sizes:
            boxlist = BoxList(anchors, (w, h), mode="xyxy")
            t = self.straddle_thresh
            if t >= 0:
                vis = (
                    (anchors[:, 0] >= -t)
                    & (anchors[:, 1] >= -t)
                    & (anchors[:, 2] < w + t)
                    & (anchors[:, 3] < h + t)
                )
            else:
                vis = torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
            boxlist.add_field("visibility", vis)
            out.append(boxlist)
        return out
