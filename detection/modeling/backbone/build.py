"""`build_resnet_backbone(cfg)`: MODEL.BACKBONE / MODEL.RESNETS -> `ResNet` keyword arguments,
with every rule on those keys checked here, once (the error names the key)."""

from __future__ import annotations

import re

from detection.layers.norm import NORMS
from detection.modeling.backbone.resnet import RESNET_SPECS, ResNet, resnet_stage_widths


def build_resnet_backbone(cfg) -> ResNet:
    """The backbone of `cfg.MODEL.BACKBONE` / `cfg.MODEL.RESNETS` (errors name the key)."""
    body = cfg.MODEL.BACKBONE.CONV_BODY
    m = re.fullmatch(r"R-(\d+)-C5", body)
    if m is None or int(m.group(1)) not in RESNET_SPECS:
        raise ValueError(
            f"MODEL.BACKBONE.CONV_BODY must be one of "
            f"{['R-%d-C5' % d for d in sorted(RESNET_SPECS)]}, got {body!r}"
        )
    depth = int(m.group(1))
    r = cfg.MODEL.RESNETS
    if len(r.STAGE_WITH_DCN) != 4:
        raise ValueError(
            f"MODEL.RESNETS.STAGE_WITH_DCN has {len(r.STAGE_WITH_DCN)} flags but {body} has 4 "
            f"stages (res2..res5)"
        )
    if r.NORM not in NORMS:
        raise ValueError(f"MODEL.RESNETS.NORM must be one of {NORMS}, got {r.NORM!r}")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    freeze = cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT
    if not 0 <= freeze <= 5:
        raise ValueError(f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT must be in 0..5, got {freeze}")
    if RESNET_SPECS[depth][0] == "basic" and r.NUM_GROUPS != 1:
        raise ValueError(f"MODEL.RESNETS.NUM_GROUPS must be 1 for {body} (BasicBlock)")
    if r.DEFORMABLE_GROUPS < 1:
        raise ValueError(f"MODEL.RESNETS.DEFORMABLE_GROUPS must be >= 1, got {r.DEFORMABLE_GROUPS}")
    stages = resnet_stage_widths(
        depth, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP
    )
    basic = RESNET_SPECS[depth][0] == "basic"
    widths = {  # input channels of the deformable 3x3 convs of each deformable stage
        name: sorted({w.in_channels, w.out_channels}) if basic else [w.bottleneck_channels]
        for name, w, dcn in zip(("res2", "res3", "res4", "res5"), stages, r.STAGE_WITH_DCN)
        if dcn
    }
    bad = {k: v for k, v in widths.items() if any(w % r.DEFORMABLE_GROUPS for w in v)}
    if bad:
        raise ValueError(
            f"MODEL.RESNETS.DEFORMABLE_GROUPS={r.DEFORMABLE_GROUPS} must divide the input channels "
            f"of every deformable 3x3 conv (stages of MODEL.RESNETS.STAGE_WITH_DCN); it does not "
            f"divide {bad}"
        )
    if r.NORM == "GN":
        g = cfg.MODEL.GROUP_NORM.NUM_GROUPS
        widths = [r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP]
        if g <= 0 or any(w % g for w in widths):
            raise ValueError(
                f"MODEL.GROUP_NORM.NUM_GROUPS={g} must divide MODEL.RESNETS.STEM_OUT_CHANNELS, "
                f"RES2_OUT_CHANNELS and NUM_GROUPS * WIDTH_PER_GROUP ({widths})"
            )
    return ResNet(
        depth=depth,
        norm=r.NORM,
        gn_num_groups=cfg.MODEL.GROUP_NORM.NUM_GROUPS,
        gn_eps=cfg.MODEL.GROUP_NORM.EPSILON,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        stride_in_1x1=r.STRIDE_IN_1X1,
        res5_dilation=r.RES5_DILATION,
        stage_with_dcn=tuple(bool(s) for s in r.STAGE_WITH_DCN),
        with_modulated_dcn=r.WITH_MODULATED_DCN,
        deformable_groups=r.DEFORMABLE_GROUPS,
        freeze_at=freeze,
    )
