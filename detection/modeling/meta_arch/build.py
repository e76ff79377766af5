"""`build_detection_model(cfg)`: the detector described by a config, and `check_model_config`,
which runs the builders' checks without allocating."""

from __future__ import annotations

import torch

from detection.modeling.backbone import build_backbone
from detection.modeling.meta_arch.generalized_rcnn import GeneralizedRCNN
from detection.modeling.roi_heads.mimic import build_mimic
from detection.modeling.roi_heads.roi_heads import build_roi_heads
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
    rpn = build_rpn(cfg, backbone.out_channels["C4"])
    roi_heads = mimic = None
    if not m.RPN_ONLY:
        roi_heads = build_roi_heads(
            cfg,
            in_channels=backbone.out_channels["C5"],
            spatial_scale=1.0 / backbone.out_strides["C5"],
        )
        if m.MIMIC_ON:
            mimic = build_mimic(cfg, feature_dim=m.ROI_BOX_HEAD.MLP_HEAD_DIM)
    return GeneralizedRCNN(
        backbone=backbone,
        rpn=rpn,
        roi_heads=roi_heads,
        mimic=mimic,
        size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY,
    )


def check_model_config(cfg) -> None:
    """Run the model builders' own checks (`build_detection_model`) without allocating: the
    model is built on the meta device. Raises their ValueError, which names the key."""
    with torch.device("meta"):
        build_detection_model(cfg)
