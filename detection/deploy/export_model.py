"""The inference model with plain tensors in and out, for torch.export and the ONNX exporter.

`GeneralizedRCNN` takes an `ImageList` and returns BoxLists; an exported graph takes tensors and
returns tensors. `DetectorForExport` is that boundary for one image:
`forward(image: Tensor[1, 3, H, W]) -> (boxes Tensor[D, 4] xyxy, scores Tensor[D],
labels Tensor[D] int64, masks Tensor[D, 1, M, M] probabilities)`, `image` normalised as
`Predictor.preprocess` makes it (resized, BGR minus PIXEL_MEAN), not padded: the graph pads it
with zeros at the bottom and right to a multiple of `size_divisible`
(DATALOADER.SIZE_DIVISIBILITY) as `to_image_list` does, and clips to the unpadded `H x W`, so
that one image gives what the PyTorch model gives on a batch of that image alone. Boxes are in
the image's coordinates; masks are pasted on the host (`paste_prediction`), as the predictor
does. H and W may be dynamic (symbolic) in an exported graph. `BackboneForExport` is the backbone alone:
`forward(image) -> (C4, C5)`.

The model is used, never changed: the wrappers only call the public interfaces of its parts
(backbone, RPN, RoI heads), in eval mode.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from detection.modeling.meta_arch.generalized_rcnn import GeneralizedRCNN
from detection.structures.image_list import ImageList


def _check_eval(model: GeneralizedRCNN) -> None:
    if model.training:
        raise ValueError("export needs the model in eval mode: call model.eval() first")


class BackboneForExport(nn.Module):
    """`forward(image Tensor[N, 3, H, W]) -> (C4, C5)`: the backbone's two feature maps."""

    def __init__(self, model: GeneralizedRCNN) -> None:
        super().__init__()
        _check_eval(model)
        self.backbone = model.backbone

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(image)
        return features["C4"], features["C5"]


class DetectorForExport(nn.Module):
    """The whole inference path of one image (module docstring)."""

    def __init__(self, model: GeneralizedRCNN, size_divisible: int = 0) -> None:
        super().__init__()
        _check_eval(model)
        if model.roi_heads is None or model.roi_heads.mask_head is None:
            raise ValueError("DetectorForExport needs the box and mask heads (MODEL.MASK_ON)")
        if size_divisible < 0:
            raise ValueError(f"size_divisible must be >= 0, got {size_divisible}")
        self.model = model
        self.size_divisible = size_divisible

    def forward(
        self, image: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2], image.shape[-1]
        d = self.size_divisible
        if d > 0:  # (-h) % d stays symbolic for a dynamic size
            image = F.pad(image, (0, (-w) % d, 0, (-h) % d))
        images = ImageList(image, [(h, w)])
        features = self.model.backbone(image)
        proposals, _ = self.model.rpn(images, features)
        results, _ = self.model.roi_heads(features, proposals)
        det = results[0]
        return det.bbox, det.get_field("scores"), det.get_field("labels"), det.get_field("mask")
