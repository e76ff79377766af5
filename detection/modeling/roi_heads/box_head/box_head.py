"""`ROIBoxHead`: the box head on the reduced C5 map, and its builder.

Training samples RoIs from the proposals plus the ground-truth boxes (`loss.RoISampler`),
computes `loss_classifier` and `loss_box_reg` (optionally with online hard example mining,
`loss.fastrcnn_losses`) and returns the sampled RoIs, each carrying its fc feature (field
"box_features", read by feature mimicking). Inference decodes, clips, thresholds, runs per-class
NMS and keeps the best detections (`inference`).

OHEM runs in one of two ways, with the same losses and gradients:
- one pass (`ohem_two_pass=False`): the head runs forward over every sampled RoI with autograd;
  the RoIs not kept enter the losses multiplied by 0, so the backward still runs over all of
  them. Needed when something else reads every RoI's feature with its gradient (mimicking).
- two passes (Shrivastava et al. 2016): a forward without autograd over every sampled RoI ranks
  them, then the head runs forward and backward over the kept RoIs only. The RoIs carry no
  "box_features" then.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.modeling.roi_heads.box_head.feature_extractor import BoxHeadFeatureExtractor
from detection.modeling.roi_heads.box_head.inference import BoxPostProcessor
from detection.modeling.roi_heads.box_head.loss import (
    RoISampler,
    fastrcnn_losses,
    per_roi_losses,
    select_hardest,
)
from detection.modeling.roi_heads.box_head.predictor import BoxPredictor
from detection.modeling.roi_heads.poolers import Pooler, boxes_to_rois
from detection.structures.bounding_box import BoxList

BOX_FEATURES = "box_features"


class ROIBoxHead(nn.Module):
    """`forward(features, proposals, targets) -> (results, losses)`, `features` the reduced C5
    map `Tensor[N, C, H, W]`.

    Training: results are the sampled RoIs (`RoISampler` fields plus "box_features",
    `Tensor[R_i, D]`, unless OHEM runs in two passes), losses `loss_classifier` and
    `loss_box_reg`. Inference: results are the detections (`BoxPostProcessor`), no losses.
    `ohem_two_pass` chooses how OHEM runs (module docstring); it has no effect without OHEM.
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
        ohem_two_pass: bool = False,
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
        self.ohem_two_pass = ohem_two_pass

    def forward(
        self,
        features: torch.Tensor,
        proposals: List[BoxList],
        targets: Optional[List[BoxList]] = None,
    ) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode")
            with torch.no_grad():
                proposals = self.sampler(proposals, targets)
            if self.ohem_per_image > 0 and self.ohem_two_pass:
                return proposals, self._ohem_two_pass_losses(features, proposals)
        x = self.feature_extractor(features, boxes_to_rois(proposals).to(features.device))
        class_logits, box_regression = self.predictor(x)
        class_logits, box_regression = class_logits.float(), box_regression.float()
        if not self.training:
            return self.post_processor(class_logits, box_regression, proposals), {}
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
        for p, f in zip(proposals, x.split([len(p) for p in proposals])):
            p.add_field(BOX_FEATURES, f)
        return proposals, {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def _ohem_two_pass_losses(
        self, features: torch.Tensor, proposals: List[BoxList]
    ) -> Dict[str, torch.Tensor]:
        rois = boxes_to_rois(proposals).to(features.device)
        labels = torch.cat([p.get_field("labels") for p in proposals])
        reg = torch.cat([p.get_field("regression_targets") for p in proposals])
        kw = dict(cls_agnostic=self.cls_agnostic, beta=self.smooth_l1_beta)
        with torch.no_grad():
            logits, deltas = self.predictor(self.feature_extractor(features, rois))
            cls, box = per_roi_losses(logits.float(), deltas.float(), labels, reg, **kw)
            keep = select_hardest(cls + box, [len(p) for p in proposals], self.ohem_per_image)
        class_logits, box_regression = self.predictor(self.feature_extractor(features, rois[keep]))
        loss_cls, loss_box, _ = fastrcnn_losses(
            class_logits.float(),
            box_regression.float(),
            labels[keep],
            reg[keep],
            [int(keep.sum())],
            box_loss_weight=self.box_loss_weight,
            **kw,
        )
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}


def build_roi_box_head(cfg, *, pooler: Pooler, in_channels: int) -> ROIBoxHead:
    """The box head of `cfg.MODEL.ROI_HEADS` / `cfg.MODEL.ROI_BOX_HEAD` on a map of
    `in_channels` channels, pooled by `pooler` (built by `build_roi_heads`, see there why)."""
    rh, bh = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    if rh.NUM_CLASSES < 2:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES (classes + background) must be >= 2, got {rh.NUM_CLASSES}"
        )
    if rh.OHEM and rh.OHEM_BATCH_SIZE_PER_IMAGE <= 0:
        raise ValueError(
            "MODEL.ROI_HEADS.OHEM_BATCH_SIZE_PER_IMAGE must be positive with MODEL.ROI_HEADS.OHEM"
        )
    if rh.DETECTIONS_PER_IMG <= 0:
        raise ValueError(
            f"MODEL.ROI_HEADS.DETECTIONS_PER_IMG must be positive, got {rh.DETECTIONS_PER_IMG}"
        )
    extractor = BoxHeadFeatureExtractor(
        in_channels=in_channels, pooler=pooler, mlp_dim=bh.MLP_HEAD_DIM
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
        # mimicking reads every sampled RoI's feature with its gradient
        ohem_two_pass=not cfg.MODEL.MIMIC_ON,
    )
