"""RoI pooling of the heads, chosen by name: modulated deformable, deformable (v1) or RoIAlign."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from detection.layers.deform_roi_pool import DeformRoIPoolPack, ModulatedDeformRoIPoolPack
from detection.layers.roi_align import RoIAlign
from detection.structures.bounding_box import BoxList

POOLERS = ("ModulatedDeformRoIPool", "DeformRoIPool", "RoIAlign")


def boxes_to_rois(boxes: List[BoxList]) -> torch.Tensor:
    """`Tensor[R, 5]` rows (batch index, x1, y1, x2, y2) from one xyxy BoxList per image."""
    rois = []
    for i, b in enumerate(boxes):
        bb = b.convert("xyxy").bbox
        rois.append(torch.cat([bb.new_full((bb.shape[0], 1), float(i)), bb], dim=1))
    if not rois:
        return torch.zeros(0, 5)
    return torch.cat(rois, dim=0)


class Pooler(nn.Module):
    """`forward(feature Tensor[N, C, H, W], rois Tensor[R, 5]) -> Tensor[R, C, P, P]`.

    rois are in input-image pixels; `spatial_scale` maps them onto the feature (1/16 for C5 with
    the dilated res5). "ModulatedDeformRoIPool" is `ModulatedDeformRoIPoolPack` (learned offsets
    scaled by `gamma` and a learned modulation mask), "DeformRoIPool" `DeformRoIPoolPack`
    (offsets only, DCNv1), "RoIAlign" `RoIAlign(aligned=True)`.
    """

    def __init__(
        self,
        *,
        name: str,
        output_size: int,
        spatial_scale: float,
        sampling_ratio: int,
        gamma: float,
        in_channels: int,
        fc_channels: int,
    ) -> None:
        super().__init__()  # `name` is one of POOLERS: checked by build_pooler
        self.name = name
        self.output_size = output_size
        if name == "RoIAlign":
            self.pool = RoIAlign(output_size, spatial_scale, sampling_ratio, aligned=True)
        else:
            cls = (
                ModulatedDeformRoIPoolPack
                if name == "ModulatedDeformRoIPool"
                else DeformRoIPoolPack
            )
            self.pool = cls(
                output_size, spatial_scale, sampling_ratio, gamma, in_channels, fc_channels
            )

    def forward(self, feature: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        rois = rois.to(device=feature.device)
        if rois.dtype != feature.dtype and not torch.is_autocast_enabled(feature.device.type):
            # e.g. a float64 model; under autocast the op's autocast rule aligns dtypes and
            # the RoI coordinates stay float32 (bfloat16 would round 1000-pixel coordinates)
            rois = rois.to(feature.dtype)
        return self.pool(feature, rois)


def build_pooler(cfg_head, key: str, *, spatial_scale: float, in_channels: int) -> Pooler:
    """A Pooler from a head's config node (POOLER, POOLER_RESOLUTION, ...); `key` names the node
    in errors (e.g. "MODEL.ROI_BOX_HEAD")."""
    if cfg_head.POOLER not in POOLERS:
        raise ValueError(f"{key}.POOLER must be one of {POOLERS}, got {cfg_head.POOLER!r}")
    if cfg_head.POOLER_RESOLUTION <= 0:
        raise ValueError(
            f"{key}.POOLER_RESOLUTION must be positive, got {cfg_head.POOLER_RESOLUTION}"
        )
    if cfg_head.POOLER_SAMPLING_RATIO < 0:
        raise ValueError(
            f"{key}.POOLER_SAMPLING_RATIO must be >= 0, got {cfg_head.POOLER_SAMPLING_RATIO}"
        )
    return Pooler(
        name=cfg_head.POOLER,
        output_size=cfg_head.POOLER_RESOLUTION,
        spatial_scale=spatial_scale,
        sampling_ratio=cfg_head.POOLER_SAMPLING_RATIO,
        gamma=cfg_head.POOLER_GAMMA,
        in_channels=in_channels,
        fc_channels=cfg_head.DEFORM_FC_CHANNELS,
    )
