"""Mask pasting, the one place it happens: the evaluator and the predictor both call
`paste_prediction` (resize a prediction to the original image, paste its M x M masks there)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from detection.structures.bounding_box import BoxList


def paste_prediction(
    prediction: BoxList, image_size_wh: Tuple[int, int], threshold: float = 0.5
) -> BoxList:
    """`prediction` (in the coordinates of the resized input) moved to the original image of
    `image_size_wh = (w, h)`, xyxy; its "mask" field, when present (`Tensor[N, 1, M, M]`
    probabilities), replaced by the pasted `Tensor[N, 1, h, w]` bool masks."""
    w, h = int(image_size_wh[0]), int(image_size_wh[1])
    out = prediction.resize((w, h)).convert("xyxy")
    if out.has_field("mask"):
        out.add_field(
            "mask", paste_masks_in_image(out.get_field("mask"), out.bbox, (h, w), threshold)
        )
    return out


def paste_masks_in_image(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_size: Tuple[int, int],
    threshold: float = 0.5,
    padding: int = 1,
) -> torch.Tensor:
    """Paste `M x M` mask probabilities into the image: `Tensor[N, 1, h, w]` bool.

    Args:
        masks: `Tensor[N, 1, M, M]` probabilities, mask i covering `boxes[i]`.
        boxes: `Tensor[N, 4]` (x1, y1, x2, y2) in pixels of the `image_size = (h, w)` image.
        threshold: pixels whose pasted (bilinearly resampled) probability is `> threshold`
            are True.
        padding: the mask is zero-padded by this many cells on each side and the box enlarged
            accordingly (scale `(M + 2p) / M` about its centre), so the bilinear resampling
            fades to 0 at the box border instead of being cut off.

    Pixel (y, x) covers `[x, x+1) x [y, y+1)` and is sampled at its centre `(x + 0.5, y + 0.5)`;
    mask cell j of the padded mask covers `[x1' + j * bw, x1' + (j+1) * bw)` of the enlarged box.
    """
    if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[2] != masks.shape[3]:
        raise ValueError(f"masks must be Tensor[N, 1, M, M], got {tuple(masks.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"boxes must be Tensor[N, 4] matching masks, got {tuple(boxes.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    h, w = int(image_size[0]), int(image_size[1])
    n, m = masks.shape[0], masks.shape[-1]
    if n == 0:
        return torch.zeros(0, 1, h, w, dtype=torch.bool, device=masks.device)
    masks = F.pad(masks.float(), (padding,) * 4)
    scale = (m + 2 * padding) / m
    boxes = boxes.float()
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    hw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6) * 0.5 * scale
    hh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6) * 0.5 * scale
    xs = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5
    out = torch.zeros(n, 1, h, w, dtype=torch.bool, device=masks.device)
    chunk = max(1, int(2**24 // max(h * w, 1)))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        gx = (xs[None, :] - cx[s:e, None]) / hw[s:e, None]  # [-1, 1] over the enlarged box
        gy = (ys[None, :] - cy[s:e, None]) / hh[s:e, None]
        grid = torch.stack(
            (gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)), dim=-1
        )
        pasted = F.grid_sample(
            masks[s:e], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out[s:e] = pasted > threshold
    return out
