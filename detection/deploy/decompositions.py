"""`torch.ops.detection.*` written with standard tensor ops, for exporters that have no
translation of the op (`DECOMPOSITIONS`, for `ExportedProgram.run_decompositions`).

`modulated_deform_roi_pool` becomes bilinear gathers, following docs/CONVENTIONS.md and the
kernel (csrc/roi_common/roi_sampling.h) step by step, so that the ONNX file carries only
Gather/Mul/Add-style ops: RoI box `start = x1 * scale - 0.5`, bin = roi size / output size, bin
start moved by `gamma * roi size * offset` (channel 0 x, channel 1 y), `sampling_ratio` samples
per bin per axis at `(i + 0.5) * bin / grid`; a sample outside `[-1, H] x [-1, W]` is 0 but
counts in the average; otherwise clamped into the image and read bilinearly; the bin average is
multiplied by the mask. Only a fixed `sampling_ratio > 0` decomposes (the adaptive grid,
`sampling_ratio = 0`, has a data-dependent sample count).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _axis(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(valid, low, high, frac) of sample coordinates along an axis of `size` pixels."""
    valid = (coord >= -1) & (coord <= size)
    c = coord.clamp(min=0, max=size - 1)
    low = c.floor().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    return valid, low.long(), high.long(), c - low


def modulated_deform_roi_pool(
    input: Tensor,
    rois: Tensor,
    offset: Optional[Tensor],
    mask: Optional[Tensor],
    pooled_height: int,
    pooled_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    gamma: float,
) -> Tensor:
    """The op's forward (`input Tensor[N, C, H, W]`, `rois Tensor[R, 5]`, `offset Tensor[R, 2,
    ph, pw]` or None, `mask Tensor[R, 1, ph, pw]` or None) -> `Tensor[R, C, ph, pw]`."""
    if sampling_ratio <= 0:
        raise NotImplementedError(
            "modulated_deform_roi_pool decomposes only with a fixed sampling_ratio > 0 "
            f"(POOLER_SAMPLING_RATIO), got {sampling_ratio}"
        )
    n, c, h, w = input.shape
    r = rois.shape[0]
    g = sampling_ratio
    dtype = input.dtype
    rois = rois.to(dtype)
    start_w = rois[:, 1] * spatial_scale - 0.5
    start_h = rois[:, 2] * spatial_scale - 0.5
    roi_w = rois[:, 3] * spatial_scale - 0.5 - start_w
    roi_h = rois[:, 4] * spatial_scale - 0.5 - start_h
    bin_w = (roi_w / pooled_width)[:, None, None, None]
    bin_h = (roi_h / pooled_height)[:, None, None, None]
    if offset is not None:
        dx = gamma * roi_w[:, None, None] * offset[:, 0].to(dtype)  # [R, ph, pw]
        dy = gamma * roi_h[:, None, None] * offset[:, 1].to(dtype)
    else:
        dx = dy = torch.zeros((r, pooled_height, pooled_width), dtype=dtype, device=input.device)
    bins_y = torch.arange(pooled_height, dtype=dtype, device=input.device)[None, :, None, None]
    bins_x = torch.arange(pooled_width, dtype=dtype, device=input.device)[None, None, :, None]
    grid = torch.arange(g, dtype=dtype, device=input.device)[None, None, None, :] + 0.5
    # sample coordinates [R, ph, pw, g], as the kernel's sample_y / sample_x
    ys = start_h[:, None, None, None] + dy[..., None] + bins_y * bin_h + grid * bin_h / g
    xs = start_w[:, None, None, None] + dx[..., None] + bins_x * bin_w + grid * bin_w / g
    vy, y0, y1, ly = _axis(ys, h)
    vx, x0, x1, lx = _axis(xs, w)
    # every (y sample, x sample) pair of a bin: [R, ph, pw, g, g]
    vy, y0, y1, ly = (t[..., :, None] for t in (vy, y0, y1, ly))
    vx, x0, x1, lx = (t[..., None, :] for t in (vx, x0, x1, lx))
    valid = (vy & vx).to(dtype)
    base = rois[:, 0].long()[:, None, None, None, None] * (h * w)
    flat = input.permute(0, 2, 3, 1).reshape(n * h * w, c)  # rows: (batch, y, x)

    def corner(yy: Tensor, xx: Tensor) -> Tensor:
        return flat[(base + yy * w + xx).reshape(-1)].reshape(
            r, pooled_height, pooled_width, g, g, c
        )

    hy, hx = 1 - ly, 1 - lx
    value = (
        corner(y0, x0) * (hy * hx * valid)[..., None]
        + corner(y0, x1) * (hy * lx * valid)[..., None]
        + corner(y1, x0) * (ly * hx * valid)[..., None]
        + corner(y1, x1) * (ly * lx * valid)[..., None]
    )
    out = value.sum(dim=(3, 4)) / (g * g)  # [R, ph, pw, C]
    out = out.permute(0, 3, 1, 2)
    if mask is not None:
        out = out * mask.to(dtype)
    return out.contiguous()


def decompositions() -> dict:
    """`{op overload: function}` for `ExportedProgram.run_decompositions`."""
    return {torch.ops.detection.modulated_deform_roi_pool.default: modulated_deform_roi_pool}
