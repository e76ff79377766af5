"""`build_detection_model(cfg)`: the detector described by a config."""

from __future__ import annotations

from detection.modeling.backbone import build_backbone
from detection.modeling.meta_arch.generalized_rcnn import GeneralizedRCNN
from detection.modeling.roi_heads.box_head import build_roi_box_head
from detection.modeling.roi_heads.mask_head import build_roi_mask_head
from detection.modeling.roi_heads.mimic import build_mimic
from detection.modeling.rpn.rpn import build_rpn

META_ARCHITECTURES = ("GeneralizedRCNN",)


def build_detection_model(cfg) -> GeneralizedRCNN:
    """Build the model of `cfg.MODEL` (not moved to `cfg.MODEL.DEVICE`; the caller does that).

    Invalid combinations raise a ValueError naming the keys.
    """
    m = cfg.MODEL
    if m.META_ARCHITECTURE not in META_ARCHITECTURES:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE must be one of {META_ARCHITECTURES}, got {m.META_ARCHITECTURE!r}"
        )
    if m.RPN_ONLY and m.MASK_ON:
        raise ValueError("MODEL.MASK_ON needs the box head, but MODEL.RPN_ONLY is True")
    if m.RPN_ONLY and m.MIMIC_ON:
        raise ValueError("MODEL.MIMIC_ON needs the box head, but MODEL.RPN_ONLY is True")
    if cfg.DATALOADER.SIZE_DIVISIBILITY < 0:
        raise ValueError(
            f"DATALOADER.SIZE_DIVISIBILITY must be >= 0, got {cfg.DATALOADER.SIZE_DIVISIBILITY}"
        )
    backbone = build_backbone(cfg)
    rpn = build_rpn(cfg, backbone.c4_channels)
    box_head = mask_head = mimic = None
    if not m.RPN_ONLY:
        scale = 1.0 / backbone.c5_stride
        box_head = build_roi_box_head(cfg, in_channels=backbone.c5_channels, spatial_scale=scale)
        reduced = box_head.feature_extractor.out_channels
        if m.MASK_ON:
            mask_head = build_roi_mask_head(cfg, in_channels=reduced, spatial_scale=scale)
        if m.MIMIC_ON:
            mimic = build_mimic(cfg, feature_dim=m.ROI_BOX_HEAD.MLP_HEAD_DIM)
    return GeneralizedRCNN(
        backbone=backbone,
        rpn=rpn,
        box_head=box_head,
        mask_head=mask_head,
        mimic=mimic,
        size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY,
    )


__all__ = ["build_detection_model"]
