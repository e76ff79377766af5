"""Operations on `BoxList`s: IoU, concatenation, NMS, small-box removal."""

from __future__ import annotations

from typing import Sequence

import torch

from detection.layers.nms import nms
from detection.structures.bounding_box import BoxList
from detection.structures.segmentation_mask import SegmentationMask


def boxlist_iou(boxlist1: BoxList, boxlist2: BoxList) -> torch.Tensor:
    """Pairwise IoU `Tensor[N, M]` of two BoxLists of the same image (continuous coordinates).

    Boxes with zero area give IoU 0 (never NaN).
    """
    if boxlist1.size != boxlist2.size:
        raise ValueError(
            f"boxlists must share an image size, got {boxlist1.size} and {boxlist2.size}"
        )
    b1 = boxlist1.convert("xyxy").bbox
    b2 = boxlist2.convert("xyxy").bbox
    area1 = boxlist1.convert("xyxy").area()
    area2 = boxlist2.convert("xyxy").area()
    lt = torch.max(b1[:, None, :2], b2[None, :, :2])
    rb = torch.min(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def cat_boxlist(bboxes: Sequence[BoxList]) -> BoxList:
    """Concatenate BoxLists of one image (same size, mode and field names)."""
    if not isinstance(bboxes, (list, tuple)) or len(bboxes) == 0:
        raise ValueError("bboxes must be a non-empty list of BoxList")
    if len(bboxes) == 1:
        return bboxes[0]
    size, mode = bboxes[0].size, bboxes[0].mode
    fields = set(bboxes[0].fields())
    for b in bboxes:
        if b.size != size or b.mode != mode or set(b.fields()) != fields:
            raise ValueError("cat_boxlist needs BoxLists with equal size, mode and fields")
    out = BoxList(torch.cat([b.bbox for b in bboxes], dim=0), size, mode)
    for f in fields:
        data = [b.get_field(f) for b in bboxes]
        if isinstance(data[0], torch.Tensor):
            out.add_field(f, torch.cat(data, dim=0))
        else:
            out.add_field(f, _cat_masks(data))
    return out


def _cat_masks(masks):
    first = masks[0]
    if not all(isinstance(m, SegmentationMask) for m in masks):
        raise ValueError("cat_boxlist can only concatenate Tensor or SegmentationMask fields")
    if all(m.mode == "poly" for m in masks):
        return SegmentationMask(sum((m.polygons for m in masks), []), first.size, "poly")
    tensors = [m.convert("mask").masks for m in masks]
    return SegmentationMask(torch.cat(tensors, dim=0), first.size, "mask")


def boxlist_nms(
    boxlist: BoxList, nms_thresh: float, max_proposals: int = -1, score_field: str = "scores"
) -> BoxList:
    """Non-maximum suppression over the boxes, sorted by decreasing `score_field`.

    Keeps at most `max_proposals` boxes (-1 = all); `nms_thresh <= 0` returns the input.
    """
    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    keep = nms(boxlist.bbox, boxlist.get_field(score_field), nms_thresh)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep].convert(mode)


def remove_small_boxes(boxlist: BoxList, min_size: float) -> BoxList:
    """Drop boxes whose width or height (x2 - x1, y2 - y1) is below `min_size`."""
    ws, hs = boxlist.convert("xywh").bbox[:, 2:].unbind(dim=1)
    keep = ((ws >= min_size) & (hs >= min_size)).nonzero().squeeze(1)
    return boxlist[keep]
