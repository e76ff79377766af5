"""Box head inference: class probabilities and deltas -> per-class NMS'd detections."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from detection.layers.nms import batched_nms
from detection.modeling.box_coder import BoxCoder
from detection.structures.bounding_box import BoxList


class BoxPostProcessor:
    """Detections from class probabilities and per-class deltas.

    Per image: softmax, decode every class's box from its RoI, clip to the image, drop scores
    `<= score_thresh`, per-class NMS at `nms_thresh`, keep the `detections_per_img` best.
    Output BoxLists (xyxy) with "scores" (float) and "labels" (int64, 1..C).
    """

    def __init__(
        self,
        *,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        box_coder: BoxCoder,
        cls_agnostic: bool = False,
    ) -> None:
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.box_coder = box_coder
        self.cls_agnostic = cls_agnostic

    def __call__(
        self, class_logits: torch.Tensor, box_regression: torch.Tensor, proposals: List[BoxList]
    ) -> List[BoxList]:
        probs = F.softmax(class_logits.float(), dim=-1)
        box_regression = box_regression.float()
        num_classes = probs.shape[1]
        ref = torch.cat([p.convert("xyxy").bbox for p in proposals], 0)
        if self.cls_agnostic:
            box_regression = box_regression[:, -4:].repeat(1, num_classes)
        boxes = self.box_coder.decode(box_regression, ref).view(-1, num_classes, 4)
        out = []
        start = 0
        for prop in proposals:
            n = prop.bbox.shape[0]  # not len(): a symbolic size under torch.export
            w, h = prop.size
            b = boxes[start : start + n, 1:]
            s = probs[start : start + n, 1:]
            start += n
            b = torch.stack(
                (
                    b[..., 0].clamp(0, w),
                    b[..., 1].clamp(0, h),
                    b[..., 2].clamp(0, w),
                    b[..., 3].clamp(0, h),
                ),
                dim=-1,
            )
            labels = torch.arange(1, num_classes, device=b.device).expand_as(s)
            keep = s > self.score_thresh
            b, s, labels = b[keep], s[keep], labels[keep]
            k = batched_nms(b, s, labels, self.nms_thresh)
            k = k[s[k].argsort(descending=True)][: self.detections_per_img]
            det = BoxList(b[k], prop.size, mode="xyxy")
            det.add_field("scores", s[k])
            det.add_field("labels", labels[k])
            out.append(det)
        return out
