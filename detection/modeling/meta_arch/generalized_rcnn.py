"""GeneralizedRCNN: backbone (C4, C5) -> RPN on C4 -> box / mask heads on C5 (+ mimicking)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from detection.modeling.backbone.resnet import ResNet
from detection.modeling.roi_heads.box_head import ROIBoxHead
from detection.modeling.roi_heads.mask_head import ROIMaskHead
from detection.modeling.roi_heads.mimic import FeatureMimic
from detection.modeling.rpn.rpn import RPN
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import ImageList, to_image_list


class GeneralizedRCNN(nn.Module):
    """The R-50-C5 Mask R-CNN of Deformable ConvNets (v2).

    `forward(images, targets)`: images are an `ImageList` or a list of `Tensor[3, H, W]`
    (normalised BGR 0-255, see INPUT.*). Training (targets: one BoxList per image with fields
    "labels" and, with masks, "masks") returns a dict of scalar losses, every one present in every
    step (zero but connected when not applicable): loss_objectness, loss_rpn_box_reg,
    loss_classifier, loss_box_reg, loss_mask (mask_head), loss_mimic_cos, loss_mimic_cls (mimic).
    Inference returns one BoxList per image in the coordinates of the (unpadded) input image
    with fields "scores", "labels" and "mask" (`Tensor[N, 1, 28, 28]` probabilities);
    with `rpn_only` the proposals (field "objectness").
    """

    def __init__(
        self,
        *,
        backbone: ResNet,
        rpn: RPN,
        box_head: Optional[ROIBoxHead] = None,
        mask_head: Optional[ROIMaskHead] = None,
        mimic: Optional[FeatureMimic] = None,
        size_divisible: int = 0,
    ) -> None:
        super().__init__()
        if box_head is None and (mask_head is not None or mimic is not None):
            raise ValueError("mask_head and mimic need a box_head")
        self.backbone = backbone
        self.rpn = rpn
        self.roi_box_head = box_head
        self.roi_mask_head = mask_head
        self.mimic = mimic
        self.size_divisible = size_divisible

    def _c5(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)["C5"]

    def forward(
        self,
        images: Union[ImageList, Sequence[torch.Tensor]],
        targets: Optional[Sequence[BoxList]] = None,
    ) -> Union[Dict[str, torch.Tensor], List[BoxList]]:
        if self.training and targets is None:
            raise ValueError("targets must be given in training mode")
        images = to_image_list(images, self.size_divisible)
        if targets is not None:
            targets = list(targets)
            if len(targets) != len(images):
                raise ValueError(f"got {len(targets)} targets for {len(images)} images")
        feats = self.backbone(images.tensors)
        proposals, losses = self.rpn(images, feats["C4"], targets)
        if self.roi_box_head is None:
            return losses if self.training else proposals
        reduced = self.roi_box_head.feature_extractor.reduce(feats["C5"])
        x, rois, box_losses = self.roi_box_head(reduced, proposals, targets)
        losses.update(box_losses)
        if self.roi_mask_head is not None:
            rois_m, mask_losses = self.roi_mask_head(reduced, rois, targets)
            losses.update(mask_losses)
            if not self.training:
                rois = rois_m
        if not self.training:
            return rois
        if self.mimic is not None:
            losses.update(
                self.mimic(images.tensors, rois, x, self._c5, self.roi_box_head.feature_extractor)
            )
        return losses
