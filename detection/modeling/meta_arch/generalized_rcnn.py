"""GeneralizedRCNN: backbone (C4, C5) -> RPN on C4 -> RoI heads on C5 (+ feature mimicking)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from detection.modeling.backbone.resnet import ResNet
from detection.modeling.roi_heads.mimic import FeatureMimic
from detection.modeling.roi_heads.roi_heads import ROIHeads
from detection.modeling.rpn.rpn import RPN
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import ImageList, to_image_list


class GeneralizedRCNN(nn.Module):
    """The R-50-C5 Mask R-CNN of Deformable ConvNets (v2).

    Composes its parts through one interface: the backbone maps images to features
    `{"C4", "C5"}`, then the RPN and the RoI heads each map `(features, proposals, targets)` to
    `(results, losses)`; feature mimicking (training only) takes the RoI heads' sampled RoIs and
    `crop_features`.

    `forward(images, targets)`: images are an `ImageList` or a list of `Tensor[3, H, W]`
    (normalised BGR 0-255, see INPUT.*). Training (targets: one BoxList per image with fields
    "labels" and, with masks, "masks") returns a dict of scalar losses, every one present in every
    step (zero but connected when not applicable): loss_objectness, loss_rpn_box_reg,
    loss_classifier, loss_box_reg, loss_mask (mask head), loss_mimic_cos, loss_mimic_cls (mimic).
    Inference returns one BoxList per image in the coordinates of the (unpadded) input image
    with fields "scores", "labels" and "mask" (`Tensor[N, 1, 28, 28]` probabilities);
    without RoI heads (MODEL.RPN_ONLY) the proposals (field "objectness").
    """

    def __init__(
        self,
        *,
        backbone: ResNet,
        rpn: RPN,
        roi_heads: Optional[ROIHeads] = None,
        mimic: Optional[FeatureMimic] = None,
        size_divisible: int = 0,
    ) -> None:
        super().__init__()
        if roi_heads is None and mimic is not None:
            raise ValueError("mimic needs the RoI heads")
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.mimic = mimic
        self.size_divisible = size_divisible

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """Mimicking's feature function: image crops `Tensor[R, 3, S, S]` -> the box head's fc
        feature of a RoI covering each whole crop, through the shared backbone and RoI heads."""
        return self.roi_heads.whole_image_box_features(self.backbone(crops), crops.shape[-1])

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
        features = self.backbone(images.tensors)
        proposals, losses = self.rpn(images, features, targets)
        if self.roi_heads is None:
            return losses if self.training else proposals
        results, head_losses = self.roi_heads(features, proposals, targets)
        losses.update(head_losses)
        if not self.training:
            return results
        if self.mimic is not None:
            losses.update(self.mimic(images.tensors, results, self.crop_features))
        return losses
