"""RPN losses: anchor labels by IoU matching, 1:1 sampling, BCE objectness + smooth L1 deltas."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from detection.layers.misc import zero_connected
from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.modeling.utils import smooth_l1_loss
from detection.structures.bounding_box import BoxList
from detection.structures.boxlist_ops import boxlist_iou


class RPNLossComputation:
    """Anchor targets and the two RPN losses.

    Labels: 1 for anchors matched (IoU >= fg threshold, or best for some GT), 0 below the bg
    threshold, -1 (ignored) in between or for anchors straddling the image border. Per image
    `batch_size_per_image` anchors are sampled (at most `positive_fraction` positive).
    `loss_objectness` = mean BCE over the sampled anchors; `loss_rpn_box_reg` = smooth L1 over
    the sampled positives divided by the number of sampled anchors (so both are means over the
    same set). With no ground truth every visible anchor is negative and the box loss is 0 (still
    connected to the deltas).
    """

    def __init__(
        self,
        *,
        matcher: Matcher,
        sampler: BalancedPositiveNegativeSampler,
        box_coder: BoxCoder,
        smooth_l1_beta: float,
    ) -> None:
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.smooth_l1_beta = smooth_l1_beta

    def prepare_targets(
        self, anchors: List[BoxList], targets: List[BoxList]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per image: labels `Tensor[A]` (1 / 0 / -1) and regression targets `Tensor[A, 4]`."""
        labels, reg_targets = [], []
        for anc, tgt in zip(anchors, targets):
            tgt = tgt.convert("xyxy")
            matched = self.matcher(boxlist_iou(tgt, anc))
            lab = (matched >= 0).to(torch.float32)
            lab[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
            lab[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            lab[~anc.get_field("visibility")] = -1
            if len(tgt) > 0:
                gt = tgt.bbox[matched.clamp(min=0)]
            else:
                gt = anc.bbox  # no GT: zero deltas, never used (no positives)
            labels.append(lab)
            reg_targets.append(self.box_coder.encode(gt, anc.bbox))
        return labels, reg_targets

    def __call__(
        self,
        anchors: List[BoxList],
        objectness: torch.Tensor,
        deltas: torch.Tensor,
        targets: List[BoxList],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """`objectness: Tensor[N, A]` logits, `deltas: Tensor[N, A, 4]` (flattened head outputs)."""
        labels, reg_targets = self.prepare_targets(anchors, targets)
        pos_masks, neg_masks = self.sampler(labels)
        pos = torch.cat(pos_masks)
        sampled = pos | torch.cat(neg_masks)
        labels = torch.cat(labels)
        reg_targets = torch.cat(reg_targets)
        obj = objectness.reshape(-1)
        d = deltas.reshape(-1, 4)
        num = max(int(sampled.sum()), 1)
        box_loss = (
            smooth_l1_loss(d[pos], reg_targets[pos], beta=self.smooth_l1_beta, size_average=False)
            / num
        )
        if not bool(sampled.any()):  # only ignored anchors: keep the graph connected
            return zero_connected(obj), zero_connected(d)
        obj_loss = F.binary_cross_entropy_with_logits(obj[sampled], labels[sampled])
        return obj_loss, box_loss + zero_connected(d)
