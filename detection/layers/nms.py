"""Non-maximum suppression (`torch.ops.detection.nms`) and its per-class form.

boxes: Tensor[K, 4] (x1, y1, x2, y2) with continuous coordinates (area = (x2 - x1) * (y2 - y1),
no +1); a box is suppressed when its IoU with a kept, higher-scored box is > iou_threshold. The
result is Tensor[K'] int64: kept indices by decreasing score (equal scores: input order).

Autocast: under autocast (CPU or CUDA) NMS always runs in float32.
"""

import torch
from torch import Tensor

from detection import _ext

__all__ = ["nms", "batched_nms"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over all boxes: Tensor[K, 4], Tensor[K] -> kept indices Tensor[K'] int64."""
    _ext.require_ops()
    return torch.ops.detection.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category `idxs` (Tensor[K] int): boxes of different categories never
    suppress each other. Each category's boxes are shifted by `idx * (extent + 1)`, where extent is
    the spread of all coordinates, so that categories cannot overlap, and one NMS runs on them all.
    Returns kept indices Tensor[K'] int64 by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have scores' shape {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    extent = boxes.max() - boxes.min() + 1
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
