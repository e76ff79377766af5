"""Non-maximum suppression (`torch.ops.detection.nms`) and its per-class form.

boxes: Tensor[K, 4] (x1, y1, x2, y2) with continuous coordinates (area = (x2 - x1) * (y2 - y1),
no +1); a box is suppressed when its IoU with a kept, higher-scored box is > iou_threshold. The
result is Tensor[K'] int64: kept indices by decreasing score (equal scores: input order).

Autocast: under autocast (CPU or CUDA) NMS always runs in float32.
"""

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import guard_or_false

from detection import _ext

__all__ = ["nms", "batched_nms"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over all boxes: Tensor[K, 4], Tensor[K] -> kept indices Tensor[K'] int64."""
    _ext.require_ops()
    return torch.ops.detection.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category `idxs` (Tensor[K] int): boxes of different categories never
    suppress each other. Each category's boxes are shifted by `idx * (extent + 1)`, where extent is
    the spread of the finite coordinates, so that categories cannot overlap, and one NMS runs on
    them all. A box with a non-finite coordinate overlaps nothing (its IoU is 0 or NaN), as in
    `nms`: it is kept when its score ranks and suppresses nothing, and it does not disturb the
    shift of the other boxes (an infinite extent used to turn every shifted box into NaN, so that
    nothing at all was suppressed). Returns kept indices Tensor[K'] int64 by decreasing score."""
    if guard_or_false(boxes.numel() == 0):  # False for an unbacked size (torch.export)
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if idxs.shape != scores.shape:
        raise ValueError(
            f"idxs must have scores' shape {tuple(scores.shape)}, got {tuple(idxs.shape)}"
        )
    finite = torch.isfinite(boxes)
    inf = torch.tensor(float("inf"), dtype=boxes.dtype, device=boxes.device)
    spread = torch.where(finite, boxes, -inf).max() - torch.where(finite, boxes, inf).min()
    # no finite coordinate at all: spread is -inf; any shift will do
    extent = torch.nan_to_num(spread, nan=0.0, posinf=0.0, neginf=0.0) + 1
    offsets = idxs.to(boxes) * extent
    return nms(boxes + offsets[:, None], scores, iou_threshold)


# Registration: fake kernel and autocast, only when the compiled library loaded. NMS has no
# gradient (its output is integer indices).


def _fake_nms(dets, scores, iou_threshold):
    torch._check(dets.dim() == 2 and dets.size(1) == 4, lambda: "nms: dets must be Tensor[K, 4]")
    torch._check(scores.dim() == 1 and scores.size(0) == dets.size(0), lambda: "nms: scores [K]")
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return dets.new_empty((num_kept,), dtype=torch.int64)


def _register() -> None:
    torch.library.register_fake("detection::nms")(_fake_nms)
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast("detection::nms", device_type, torch.float32)


if _ext.HAS_OPS:
    _register()
