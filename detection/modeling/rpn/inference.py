"""Turn RPN outputs into proposals: top-k, decode, clip, drop small boxes, NMS, keep top-n."""

from __future__ import annotations

from typing import List

import torch

from detection.modeling.box_coder import BoxCoder
from detection.structures.bounding_box import BoxList
from detection.structures.boxlist_ops import boxlist_nms, remove_small_boxes


class RPNPostProcessor:
    """Per image: the `pre_nms_top_n` highest-objectness anchors are decoded, clipped to the
    image (empty boxes dropped), boxes smaller than `min_size` dropped, NMS at `nms_thresh`, then the best
    `post_nms_top_n` kept. Output BoxLists (xyxy, in the image's coordinates) carry the field
    "objectness" (logits)."""

    def __init__(
        self,
        *,
        pre_nms_top_n: int,
        post_nms_top_n: int,
        nms_thresh: float,
        min_size: float,
        box_coder: BoxCoder,
    ) -> None:
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.box_coder = box_coder

    def __call__(
        self, anchors: List[BoxList], objectness: torch.Tensor, deltas: torch.Tensor
    ) -> List[BoxList]:
        """`objectness: Tensor[N, A]`, `deltas: Tensor[N, A, 4]`, anchors one BoxList per image."""
        out = []
        k = torch.sym_min(self.pre_nms_top_n, objectness.shape[1])  # symbolic under torch.export
        scores, idx = objectness.topk(k, dim=1, sorted=True)
        for i, anc in enumerate(anchors):
            boxes = self.box_coder.decode(deltas[i, idx[i]], anc.bbox[idx[i]])
            boxlist = BoxList(boxes, anc.size, mode="xyxy")
            boxlist.add_field("objectness", scores[i])
            boxlist = boxlist.clip_to_image(remove_empty=True)
            boxlist = remove_small_boxes(boxlist, self.min_size)
            boxlist = boxlist_nms(
                boxlist,
                self.nms_thresh,
                max_proposals=self.post_nms_top_n,
                score_field="objectness",
            )
            out.append(boxlist)
        return out
