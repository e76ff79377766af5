"""R-CNN feature mimicking (DCNv2 paper, section 3.3), training only.

Up to `num_per_image` positive sampled RoIs per image are cropped from the input image, resized
bilinearly to `crop_size x crop_size` and run through the shared backbone, the RoI heads' reduce
conv, the box head's pooling with the RoI covering the whole crop, and its shared fc layers, giving
`f_RCNN`. An unshared `(C+1)`-way classifier on `f_RCNN` gives `loss_mimic_cls`
(`weight_cls` x mean cross-entropy against the RoI's class); `loss_mimic_cos` is
`weight_cos * sum_RoIs (1 - cos(f_RCNN, f_FastRCNN))`, `f_FastRCNN` being the box head fc
feature of the same RoI in the main branch (both branches get gradients). Crops whose width or
height is `<= min_crop_size` input pixels are skipped.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn
import torch.nn.functional as F

from detection.layers.misc import Linear, zero_connected
from detection.modeling.roi_heads.box_head import BOX_FEATURES
from detection.structures.bounding_box import BoxList


def crop_and_resize_images(
    images: torch.Tensor, boxes: torch.Tensor, batch_idx: torch.Tensor, size: int
) -> torch.Tensor:
    """Bilinear crops `Tensor[R, C, size, size]` of `images: Tensor[B, C, H, W]`.

    `boxes: Tensor[R, 4]` (x1, y1, x2, y2) in pixels, crop r taken from image `batch_idx[r]`.
    Output pixel (v, u) samples the input at `x = x1 + (u + 0.5) * (x2 - x1) / size`,
    `y = y1 + (v + 0.5) * (y2 - y1) / size` (pixel centres at +0.5, as `F.interpolate` with
    `align_corners=False`); outside the image reads 0.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be Tensor[B, C, H, W], got {tuple(images.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or batch_idx.shape != boxes.shape[:1]:
        raise ValueError("boxes must be Tensor[R, 4] and batch_idx Tensor[R]")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    _, c, h, w = images.shape
    t = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size
    boxes = boxes.to(images.dtype)
    out = images.new_zeros(boxes.shape[0], c, size, size)
    for b in torch.unique(batch_idx).tolist():
        sel = torch.nonzero(batch_idx == b).squeeze(1)
        bx = boxes[sel]
        xs = bx[:, 0:1] + t[None] * (bx[:, 2:3] - bx[:, 0:1])  # [r, size]
        ys = bx[:, 1:2] + t[None] * (bx[:, 3:4] - bx[:, 1:2])
        gx = 2.0 * xs / w - 1.0
        gy = 2.0 * ys / h - 1.0
        r = sel.numel()
        grid = torch.stack(
            (gx[:, None, :].expand(r, size, size), gy[:, :, None].expand(r, size, size)), dim=-1
        ).reshape(1, r * size, size, 2)
        crops = F.grid_sample(
            images[b : b + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out[sel] = crops.view(c, r, size, size).permute(1, 0, 2, 3)
    return out


def select_mimic_rois(
    rois: List[BoxList], num_per_image: int, min_crop_size: float
) -> List[torch.Tensor]:
    """Per image, indices (into that image's RoIs) of at most `num_per_image` positives
    (label > 0) whose width and height exceed `min_crop_size`, in random order."""
    out = []
    for r in rois:
        b = r.convert("xyxy").bbox
        ok = (
            (r.get_field("labels") > 0)
            & (b[:, 2] - b[:, 0] > min_crop_size)
            & (b[:, 3] - b[:, 1] > min_crop_size)
        )
        idx = torch.nonzero(ok).squeeze(1)
        idx = idx[torch.randperm(idx.numel(), device=idx.device)[:num_per_image]]
        out.append(idx)
    return out


class FeatureMimic(nn.Module):
    """The mimicking branch; its own parameters are the unshared classifier `cls_score`."""

    def __init__(
        self,
        *,
        feature_dim: int,
        num_classes: int,
        num_per_image: int,
        min_crop_size: float,
        crop_size: int,
        weight_cos: float,
        weight_cls: float,
    ) -> None:
        super().__init__()
        self.cls_score = Linear(feature_dim, num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)
        self.num_per_image = num_per_image
        self.min_crop_size = min_crop_size
        self.crop_size = crop_size
        self.weight_cos = weight_cos
        self.weight_cls = weight_cls

    def forward(
        self,
        images: torch.Tensor,
        rois: List[BoxList],
        feature_fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """`images: Tensor[B, 3, H, W]` (the model input), `rois` the box head's sampled RoIs per
        image (fields "labels" and "box_features", the main branch's `f_FastRCNN`), and
        `feature_fn`, the detector's one feature function: crops `Tensor[R, 3, S, S]` ->
        their R-CNN features `Tensor[R, D]` (shared backbone, reduce conv and box fc layers on
        a RoI covering the whole crop, `GeneralizedRCNN.crop_features`)."""
        if not all(r.has_field(BOX_FEATURES) for r in rois):
            raise ValueError(
                f'feature mimicking needs every sampled RoI\'s "{BOX_FEATURES}"; the box head '
                "returns none when OHEM runs in two passes (ROIBoxHead.ohem_two_pass, which "
                "build_roi_box_head sets only without MODEL.MIMIC_ON)"
            )
        fast_features = torch.cat([r.get_field(BOX_FEATURES) for r in rois])
        chosen = select_mimic_rois(rois, self.num_per_image, self.min_crop_size)
        offsets = [0]
        for r in rois:
            offsets.append(offsets[-1] + len(r))
        flat = torch.cat([idx + off for idx, off in zip(chosen, offsets[:-1])])
        if flat.numel() == 0:
            zero = zero_connected(self, [fast_features])
            return {"loss_mimic_cos": zero, "loss_mimic_cls": zero.clone()}
        boxes = torch.cat([r.convert("xyxy").bbox[i] for r, i in zip(rois, chosen)])
        labels = torch.cat([r.get_field("labels")[i] for r, i in zip(rois, chosen)])
        bidx = torch.cat([torch.full_like(i, k) for k, i in enumerate(chosen)])
        crops = crop_and_resize_images(images, boxes.detach(), bidx, self.crop_size)
        f_rcnn = feature_fn(crops)
        logits = self.cls_score(f_rcnn).float()
        cos = F.cosine_similarity(f_rcnn.float(), fast_features[flat].float(), dim=1)
        return {
            "loss_mimic_cos": self.weight_cos * (1.0 - cos).sum(),
            "loss_mimic_cls": self.weight_cls * F.cross_entropy(logits, labels),
        }


def build_mimic(cfg, *, feature_dim: int) -> FeatureMimic:
    """The mimicking branch of `cfg.MODEL.MIMIC` (errors name the key)."""
    m = cfg.MODEL.MIMIC
    if m.NUM_PER_IMAGE <= 0:
        raise ValueError(f"MODEL.MIMIC.NUM_PER_IMAGE must be positive, got {m.NUM_PER_IMAGE}")
    if m.CROP_SIZE < 16:
        raise ValueError(
            f"MODEL.MIMIC.CROP_SIZE must be at least 16 (one C5 cell), got {m.CROP_SIZE}"
        )
    if m.MIN_CROP_SIZE < 0:
        raise ValueError(f"MODEL.MIMIC.MIN_CROP_SIZE must be >= 0, got {m.MIN_CROP_SIZE}")
    return FeatureMimic(
        feature_dim=feature_dim,
        num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        num_per_image=m.NUM_PER_IMAGE,
        min_crop_size=m.MIN_CROP_SIZE,
        crop_size=m.CROP_SIZE,
        weight_cos=m.WEIGHT_COS,
        weight_cls=m.WEIGHT_CLS,
    )
