"""Box head training targets and losses: RoI sampling (`RoISampler`), per-RoI losses, OHEM
selection (`select_hardest`) and the normalised `fastrcnn_losses`."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from detection.layers.misc import zero_connected
from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.structures.bounding_box import BoxList
from detection.structures.boxlist_ops import boxlist_iou


def per_roi_losses(
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    labels: torch.Tensor,
    regression_targets: torch.Tensor,
    *,
    cls_agnostic: bool = False,
    beta: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-RoI classification CE `Tensor[R]` and box smooth-L1 `Tensor[R]` (summed over the
    4 deltas of the GT class; 0 for background RoIs)."""
    cls = F.cross_entropy(class_logits, labels, reduction="none")
    pos = labels > 0
    cols = (pos.long() if cls_agnostic else labels).clamp(min=0)
    r = torch.arange(labels.numel(), device=labels.device)
    pred = box_regression.view(labels.numel(), box_regression.shape[1] // 4, 4)[r, cols]
    d = torch.abs(pred - regression_targets)
    elem = torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta) if beta > 0 else d
    box = elem.sum(dim=1) * pos.to(elem.dtype)
    return cls, box


def select_hardest(
    per_roi_loss: torch.Tensor, rois_per_image: Sequence[int], k: int
) -> torch.Tensor:
    """OHEM selection: bool `Tensor[R]` marking the `k` RoIs of highest loss of every image.

    `per_roi_loss` holds the RoIs of all images in order (`rois_per_image[i]` for image i);
    images with at most k RoIs keep all of them. Ties resolve by `torch.topk`.
    """
    if k <= 0:
        raise ValueError(f"k (MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE) must be positive, got {k}")
    keep = torch.zeros_like(per_roi_loss, dtype=torch.bool)
    start = 0
    for n in rois_per_image:
        if n > 0:
            idx = per_roi_loss[start : start + n].topk(min(k, n)).indices
            keep[start + idx] = True
        start += n
    return keep


def fastrcnn_losses(
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    labels: torch.Tensor,
    regression_targets: torch.Tensor,
    rois_per_image: Sequence[int],
    *,
    ohem_per_image: int = 0,
    cls_agnostic: bool = False,
    beta: float = 1.0,
    box_loss_weight: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(loss_classifier, loss_box_reg, kept)` over the sampled RoIs of the batch.

    Without OHEM (`ohem_per_image == 0`) every sampled RoI is kept. With OHEM the per-RoI loss
    used for ranking is the classification CE plus the box smooth-L1 (as in the OHEM paper,
    Shrivastava et al. 2016), computed in the same forward pass and detached; per image the
    `ohem_per_image` hardest sampled RoIs are kept (`select_hardest`).

    Normalisation: `loss_classifier` is the mean CE over the kept RoIs, `loss_box_reg` is
    `box_loss_weight` times the smooth-L1 summed over the kept positives divided by the number of
    kept RoIs (maskrcnn-benchmark's normalisation). Non-kept RoIs contribute exactly zero
    (their rows are multiplied by 0), so their gradients are zero. Both losses stay connected
    to the graph when nothing is kept.
    """
    cls, box = per_roi_losses(
        class_logits,
        box_regression,
        labels,
        regression_targets,
        cls_agnostic=cls_agnostic,
        beta=beta,
    )
    if ohem_per_image > 0:
        keep = select_hardest((cls + box).detach(), rois_per_image, ohem_per_image)
    else:
        keep = torch.ones_like(cls, dtype=torch.bool)
    w = keep.to(cls.dtype)
    n = w.sum().clamp(min=1.0)
    loss_cls = (cls * w).sum() / n
    loss_box = (box * w).sum() / n * box_loss_weight
    # background-only batches: the deltas never enter box; keep them connected
    loss_box = loss_box + zero_connected(box_regression)
    return loss_cls, loss_box, keep


class RoISampler:
    """Adds the GT boxes to the proposals, labels RoIs by IoU and samples a batch per image.

    Output BoxLists (one per image, the sampled RoIs) carry "labels" (int64, 0 = background),
    "regression_targets" (`Tensor[R, 4]`, zero for background) and "matched_idxs" (index into
    the image's targets, -1 for background).
    """

    def __init__(
        self, *, matcher: Matcher, sampler: BalancedPositiveNegativeSampler, box_coder: BoxCoder
    ) -> None:
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder

    def __call__(self, proposals: List[BoxList], targets: List[BoxList]) -> List[BoxList]:
        labels_all, candidates, matched_all = [], [], []
        for prop, tgt in zip(proposals, targets):
            tgt = tgt.convert("xyxy")
            boxes = torch.cat([prop.convert("xyxy").bbox.detach(), tgt.bbox.to(prop.bbox)], 0)
            cand = BoxList(boxes, prop.size, mode="xyxy")
            matched = self.matcher(boxlist_iou(tgt, cand))
            if len(tgt) > 0:
                labels = tgt.get_field("labels").to(torch.int64)[matched.clamp(min=0)]
            else:
                labels = torch.zeros_like(matched)
            labels = labels.clone()
            labels[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
            labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            labels_all.append(labels)
            candidates.append((cand, tgt))
            matched_all.append(matched)
        pos_masks, neg_masks = self.sampler(labels_all)
        out = []
        for (cand, tgt), labels, matched, pm, nm in zip(
            candidates, labels_all, matched_all, pos_masks, neg_masks
        ):
            idx = torch.nonzero(pm | nm).squeeze(1)
            roi = cand[idx]
            lab = labels[idx]
            m = matched[idx].clamp(min=-1)
            m = torch.where(lab > 0, m, torch.full_like(m, -1))
            reg = torch.zeros(len(idx), 4, dtype=roi.bbox.dtype, device=roi.bbox.device)
            pos = lab > 0
            if bool(pos.any()):
                reg[pos] = self.box_coder.encode(tgt.bbox[m[pos]], roi.bbox[pos])
            roi.add_field("labels", lab)
            roi.add_field("regression_targets", reg)
            roi.add_field("matched_idxs", m)
            out.append(roi)
        return out
