"""`ROIHeads`: the RoI stage on C5 -- the shared 1x1 reduce conv, the box head and the mask head.

The reduce conv (Deformable ConvNets' `conv_new_1`) belongs here because its output is shared:
the box head and the mask head both pool from the reduced map, and feature mimicking runs the
crops through the same reduce conv and box features (`whole_image_box_features`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from detection.layers.misc import Conv2d
from detection.modeling.roi_heads.box_head import ROIBoxHead, build_roi_box_head
from detection.modeling.roi_heads.mask_head import ROIMaskHead, build_roi_mask_head
from detection.modeling.roi_heads.poolers import build_pooler
from detection.structures.bounding_box import BoxList


class ROIHeads(nn.Module):
    """`forward(features, proposals, targets) -> (results, losses)`, `features` the backbone's
    `{"C4": ..., "C5": ...}`.

    `reduce_conv` (1x1 conv + ReLU, None = identity) maps `features[in_feature]` to the map both
    heads pool from. Training: results are the box head's sampled RoIs (with "box_features"),
    losses those of both heads. Inference: results are the detections, with "mask" when there is
    a mask head.
    """

    def __init__(
        self,
        *,
        reduce_conv: Optional[Conv2d],
        box_head: ROIBoxHead,
        mask_head: Optional[ROIMaskHead] = None,
        in_feature: str = "C5",
    ) -> None:
        super().__init__()
        self.reduce_conv = reduce_conv
        self.box_head = box_head
        self.mask_head = mask_head
        self.in_feature = in_feature

    def reduce(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_feature]
        return x if self.reduce_conv is None else F.relu(self.reduce_conv(x))

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[BoxList],
        targets: Optional[List[BoxList]] = None,
    ) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        reduced = self.reduce(features)
        results, losses = self.box_head(reduced, proposals, targets)
        if self.mask_head is not None:
            with_masks, mask_losses = self.mask_head(reduced, results, targets)
            losses.update(mask_losses)
            if not self.training:
                results = with_masks
        return results, losses

    def whole_image_box_features(
        self, features: Dict[str, torch.Tensor], size: int
    ) -> torch.Tensor:
        """`Tensor[B, D]`: the box head's fc feature of RoIs covering whole `size x size` images
        (feature mimicking's R-CNN branch), `features` the backbone's output for them."""
        reduced = self.reduce(features)
        n = reduced.shape[0]
        s = float(size)
        full = torch.tensor([0.0, 0.0, s, s], device=reduced.device, dtype=reduced.dtype)
        whole = torch.cat(
            [
                torch.arange(n, device=reduced.device, dtype=reduced.dtype)[:, None],
                full.expand(n, 4),
            ],
            dim=1,
        )
        return self.box_head.feature_extractor(reduced, whole)


def build_roi_heads(cfg, *, in_channels: int, spatial_scale: float) -> ROIHeads:
    """The RoI stage of `cfg.MODEL` on C5 (`in_channels` channels at `spatial_scale`).

    The parts are built in the order box pooler, reduce conv, box fc layers and predictor, mask
    head: their random initialisation draws from the global generator in that order, so a
    different order would change the initial weights of a seeded run (the golden losses).
    """
    bh = cfg.MODEL.ROI_BOX_HEAD
    if bh.REDUCE_CHANNELS < 0:
        raise ValueError(
            f"MODEL.ROI_BOX_HEAD.REDUCE_CHANNELS must be >= 0, got {bh.REDUCE_CHANNELS}"
        )
    width = bh.REDUCE_CHANNELS if bh.REDUCE_CHANNELS > 0 else in_channels
    box_pooler = build_pooler(
        bh, "MODEL.ROI_BOX_HEAD", spatial_scale=spatial_scale, in_channels=width
    )
    reduce_conv = None
    if bh.REDUCE_CHANNELS > 0:
        reduce_conv = Conv2d(in_channels, bh.REDUCE_CHANNELS, 1)
        nn.init.kaiming_uniform_(reduce_conv.weight, a=1)
        nn.init.zeros_(reduce_conv.bias)
    box_head = build_roi_box_head(cfg, pooler=box_pooler, in_channels=width)
    mask_head = None
    if cfg.MODEL.MASK_ON:
        mask_head = build_roi_mask_head(cfg, in_channels=width, spatial_scale=spatial_scale)
    return ROIHeads(reduce_conv=reduce_conv, box_head=box_head, mask_head=mask_head)
