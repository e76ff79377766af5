"""Box head on C5: reduce conv, RoI pooling, two fc layers, classifier + class-specific deltas.

Training samples RoIs from the proposals plus the ground-truth boxes, computes
`loss_classifier` and `loss_box_reg` (optionally with online hard example mining) and returns
the sampled RoIs with their fc features (used by the mask head and feature mimicking).
Inference decodes, clips, thresholds, runs per-class NMS and keeps the best detections.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from detection.layers.misc import Conv2d, Linear
from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.modeling.roi_heads.poolers import Pooler, boxes_to_rois, build_pooler
from detection.structures.bounding_box import BoxList
from detection.structures.boxlist_ops import boxlist_iou


class BoxHeadFeatureExtractor(nn.Module):
    """`reduce(C5)`: 1x1 conv `in_channels -> reduce_channels` + ReLU (identity when 0).

    `forward(reduced Tensor[N, C, H, W], rois Tensor[R, 5]) -> Tensor[R, mlp_dim]`: pooling to
    `P x P`, flatten, fc6 + ReLU, fc7 + ReLU.
    """

    def __init__(
        self, *, in_channels: int, reduce_channels: int, pooler: Pooler, mlp_dim: int
    ) -> None:
        super().__init__()
        if reduce_channels > 0:
            self.reduce_conv = Conv2d(in_channels, reduce_channels, 1)
            nn.init.kaiming_uniform_(self.reduce_conv.weight, a=1)
            nn.init.zeros_(self.reduce_conv.bias)
            self.out_channels = reduce_channels
        else:
            self.reduce_conv = None
            self.out_channels = in_channels
        self.pooler = pooler
        p = pooler.output_size
        self.fc6 = Linear(self.out_channels * p * p, mlp_dim)
        self.fc7 = Linear(mlp_dim, mlp_dim)
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def reduce(self, c5: torch.Tensor) -> torch.Tensor:
        if self.reduce_conv is None:
            return c5
        return F.relu(self.reduce_conv(c5))

    def forward(self, reduced: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        x = self.pooler(reduced, rois).flatten(1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class BoxPredictor(nn.Module):
    """`Tensor[R, D]` -> class logits `Tensor[R, C+1]` and deltas `Tensor[R, 4 * (C+1)]`
    (`Tensor[R, 8]` when class agnostic: background and foreground)."""

    def __init__(self, in_dim: int, num_classes: int, cls_agnostic: bool = False) -> None:
        super().__init__()
        self.cls_score = Linear(in_dim, num_classes)
        self.bbox_pred = Linear(in_dim, 4 * (2 if cls_agnostic else num_classes))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


# ------------------------------------------------------------------------------ losses, OHEM
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
    loss_box = loss_box + box_regression.sum() * 0.0
    return loss_cls, loss_box, keep


# ------------------------------------------------------------------------------ sampling
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


# ------------------------------------------------------------------------------ inference
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
        from detection.layers import batched_nms

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
            n = len(prop)
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


class ROIBoxHead(nn.Module):
    """`forward(reduced, proposals, targets)` -> (fc features, RoIs, losses).

    Training: RoIs are the sampled proposals (`RoISampler`), losses `loss_classifier` and
    `loss_box_reg`. Inference: RoIs are the detections (`BoxPostProcessor`), no losses.
    """

    def __init__(
        self,
        *,
        feature_extractor: BoxHeadFeatureExtractor,
        predictor: BoxPredictor,
        sampler: RoISampler,
        post_processor: BoxPostProcessor,
        ohem_per_image: int,
        cls_agnostic: bool,
        smooth_l1_beta: float,
        box_loss_weight: float,
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.sampler = sampler
        self.post_processor = post_processor
        self.ohem_per_image = ohem_per_image
        self.cls_agnostic = cls_agnostic
        self.smooth_l1_beta = smooth_l1_beta
        self.box_loss_weight = box_loss_weight

    def forward(
        self,
        reduced: torch.Tensor,
        proposals: List[BoxList],
        targets: Optional[List[BoxList]] = None,
    ) -> Tuple[torch.Tensor, List[BoxList], Dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode")
            with torch.no_grad():
                proposals = self.sampler(proposals, targets)
        x = self.feature_extractor(reduced, boxes_to_rois(proposals).to(reduced.device))
        class_logits, box_regression = self.predictor(x)
        class_logits, box_regression = class_logits.float(), box_regression.float()
        if not self.training:
            return x, self.post_processor(class_logits, box_regression, proposals), {}
        labels = torch.cat([p.get_field("labels") for p in proposals])
        reg = torch.cat([p.get_field("regression_targets") for p in proposals])
        loss_cls, loss_box, _ = fastrcnn_losses(
            class_logits,
            box_regression,
            labels,
            reg,
            [len(p) for p in proposals],
            ohem_per_image=self.ohem_per_image,
            cls_agnostic=self.cls_agnostic,
            beta=self.smooth_l1_beta,
            box_loss_weight=self.box_loss_weight,
        )
        return x, proposals, {"loss_classifier": loss_cls, "loss_box_reg": loss_box}


def build_roi_box_head(cfg, *, in_channels: int, spatial_scale: float) -> ROIBoxHead:
    """The box head of `cfg.MODEL.ROI_HEADS` / `cfg.MODEL.ROI_BOX_HEAD` on C5."""
    rh, bh = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    if rh.NUM_CLASSES < 2:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES (classes + background) must be >= 2, "
            f"got {rh.NUM_CLASSES}"
        )
    if bh.REDUCE_CHANNELS < 0:
        raise ValueError(
            f"MODEL.ROI_BOX_HEAD.REDUCE_CHANNELS must be >= 0, got {bh.REDUCE_CHANNELS}"
        )
    if rh.OHEM and rh.OHEM_BATCH_SIZE_PER_IMAGE <= 0:
        raise ValueError(
            "MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE must be positive with "
            "MODEL.ROI_HEADS.OHEM"
        )
    if rh.DETECTIONS_PER_IMG <= 0:
        raise ValueError(
            f"MODEL.ROI_HEADS.DETECTIONS_PER_IMG must be positive, got " f"{rh.DETECTIONS_PER_IMG}"
        )
    reduce_ch = bh.REDUCE_CHANNELS
    pooler = build_pooler(
        bh,
        "MODEL.ROI_BOX_HEAD",
        spatial_scale=spatial_scale,
        in_channels=reduce_ch if reduce_ch > 0 else in_channels,
    )
    extractor = BoxHeadFeatureExtractor(
        in_channels=in_channels, reduce_channels=reduce_ch, pooler=pooler, mlp_dim=bh.MLP_HEAD_DIM
    )
    coder = BoxCoder(rh.BBOX_REG_WEIGHTS)
    return ROIBoxHead(
        feature_extractor=extractor,
        predictor=BoxPredictor(bh.MLP_HEAD_DIM, rh.NUM_CLASSES, bh.CLS_AGNOSTIC_BBOX_REG),
        sampler=RoISampler(
            matcher=Matcher(rh.FG_IOU_THRESHOLD, rh.BG_IOU_THRESHOLD, False),
            sampler=BalancedPositiveNegativeSampler(rh.BATCH_SIZE_PER_IMAGE, rh.POSITIVE_FRACTION),
            box_coder=coder,
        ),
        post_processor=BoxPostProcessor(
            score_thresh=rh.SCORE_THRESH,
            nms_thresh=rh.NMS,
            detections_per_img=rh.DETECTIONS_PER_IMG,
            box_coder=coder,
            cls_agnostic=bh.CLS_AGNOSTIC_BBOX_REG,
        ),
        ohem_per_image=rh.OHEM_BATCH_SIZE_PER_IMAGE if rh.OHEM else 0,
        cls_agnostic=bh.CLS_AGNOSTIC_BBOX_REG,
        smooth_l1_beta=bh.SMOOTH_L1_BETA,
        box_loss_weight=bh.BBOX_REG_LOSS_WEIGHT,
    )
