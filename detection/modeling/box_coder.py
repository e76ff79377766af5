"""Box regression parametrisation (R-CNN deltas) in continuous pixel coordinates.

Boxes are `Tensor[N, 4]` (x1, y1, x2, y2); width = x2 - x1 (no "+1"), centre = x1 + width / 2.
Deltas are `(wx * dx, wy * dy, ww * log(w / w_ref), wh * log(h / h_ref))` with
`dx = (cx - cx_ref) / w_ref`; `weights = (wx, wy, ww, wh)`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

# exp() of a delta is clamped at this so huge predicted deltas do not overflow
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes relative to reference boxes and decode deltas back to boxes."""

    def __init__(self, weights: Sequence[float], bbox_xform_clip: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"weights must have 4 entries (wx, wy, ww, wh), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deltas `Tensor[N, 4]` that map `reference[i]` onto `boxes[i]` (both `Tensor[N, 4]`)."""
        wx, wy, ww, wh = self.weights
        rw = reference[:, 2] - reference[:, 0]
        rh = reference[:, 3] - reference[:, 1]
        rx = reference[:, 0] + 0.5 * rw
        ry = reference[:, 1] + 0.5 * rh
        gw = boxes[:, 2] - boxes[:, 0]
        gh = boxes[:, 3] - boxes[:, 1]
        gx = boxes[:, 0] + 0.5 * gw
        gy = boxes[:, 1] + 0.5 * gh
        return torch.stack(
            (
                wx * (gx - rx) / rw,
                wy * (gy - ry) / rh,
                ww * torch.log(gw / rw),
                wh * torch.log(gh / rh),
            ),
            dim=1,
        )

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes from deltas `Tensor[N, 4k]` (k boxes per reference) and `reference: Tensor[N, 4]`.

        Returns `Tensor[N, 4k]` in (x1, y1, x2, y2) order per group of four.
        """
        reference = reference.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        rw = reference[:, 2] - reference[:, 0]
        rh = reference[:, 3] - reference[:, 1]
        rx = reference[:, 0] + 0.5 * rw
        ry = reference[:, 1] + 0.5 * rh
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        cx = dx * rw[:, None] + rx[:, None]
        cy = dy * rh[:, None] + ry[:, None]
        w = torch.exp(dw) * rw[:, None]
        h = torch.exp(dh) * rh[:, None]
        out = torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=2)
        return out.reshape(deltas.shape)
