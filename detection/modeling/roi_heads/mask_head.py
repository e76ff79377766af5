"""Mask head on the reduced C5 map: pooling 14x14, 3x3 convs, 2x deconv, per-class 28x28 logits.

Training runs on the positive sampled RoIs (loss_mask = mean BCE of the GT-class channel against
`SegmentationMask.crop_and_resize(proposal boxes, 28)`); inference on the detections, adding the
field "mask" = `Tensor[N, 1, 28, 28]` sigmoid probabilities of the predicted label's channel.
`detection.structures.mask_paste` turns those into full-image binary masks.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import guard_or_false
import torch.nn.functional as F

from detection.layers.misc import Conv2d, ConvTranspose2d, zero_connected
from detection.modeling.roi_heads.poolers import Pooler, boxes_to_rois, build_pooler
from detection.structures.bounding_box import BoxList


class MaskHead(nn.Module):
    """`forward(reduced Tensor[N, C, H, W], rois Tensor[R, 5]) -> Tensor[R, num_classes, 2P, 2P]`
    logits: pooling to P x P, `conv_layers` 3x3 convs + ReLU, 2x2 stride-2 deconv + ReLU,
    1x1 conv to one logit map per class.

    `channels_last`: on the CPU, the convs run on channels-last (NHWC) tensors. oneDNN's NHWC
    kernels are faster than its NCHW ones for these narrow convs over many small RoI maps
    (`benchmarks/bench_mask_head.py`); the logits keep that layout. Other devices keep NCHW.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        pooler: Pooler,
        conv_layers: Sequence[int],
        num_classes: int,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        self.channels_last = channels_last
        ch = in_channels
        self.convs = nn.ModuleList()
        for width in conv_layers:
            conv = Conv2d(ch, width, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            ch = width
        self.deconv = ConvTranspose2d(ch, ch, 2, stride=2)
        self.logits = Conv2d(ch, num_classes, 1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        nn.init.normal_(self.logits.weight, std=0.001)
        nn.init.zeros_(self.logits.bias)

    def forward(self, reduced: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        x = self.pooler(reduced, rois)
        if self.channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self._logits(F.relu(self.deconv(x)))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """`self.logits(x)`. In training on channels-last CPU tensors the 1x1 weight goes in as a
        view: oneDNN returns its gradient with channels-last strides, which for a [K, C, 1, 1]
        weight are the parameter's memory order under other strides, and DDP warns at the first
        step ("Grad strides do not match bucket view strides", pytorch/pytorch issue 157862);
        through the view the gradient reaches the parameter with the parameter's own strides.
        The same conv on the same memory: the values are unchanged bit for bit."""
        if self.training and self.channels_last and x.device.type == "cpu" and x.numel() > 0:
            weight = self.logits.weight.flatten(1)[:, :, None, None]
            return F.conv2d(x, weight, self.logits.bias)
        return self.logits(x)


def mask_targets(positives: List[BoxList], targets: List[BoxList], resolution: int) -> torch.Tensor:
    """`Tensor[R, M, M]` in {0, 1}: each positive RoI's matched GT mask cropped to the RoI."""
    out = []
    for roi, tgt in zip(positives, targets):
        if len(roi) == 0:
            continue
        masks = tgt.get_field("masks")[roi.get_field("matched_idxs")]
        out.append(masks.crop_and_resize(roi.convert("xyxy").bbox, resolution).to(roi.bbox))
    if not out:
        return torch.zeros(0, resolution, resolution)
    return torch.cat(out, 0)


class ROIMaskHead(nn.Module):
    """`forward(features, proposals, targets) -> (results, losses)`, `features` the reduced C5
    map `Tensor[N, C, H, W]`, `proposals` the box head's results.

    Training: `proposals` are the sampled RoIs (fields "labels", "matched_idxs"); the positives are
    used; loss `loss_mask` (0, connected to the head, when there is no positive).
    Inference: `proposals` are detections ("labels"); each gets the field "mask".
    """

    def __init__(self, *, head: MaskHead, resolution: int) -> None:
        super().__init__()
        self.head = head
        self.resolution = resolution

    def forward(
        self,
        features: torch.Tensor,
        proposals: List[BoxList],
        targets: Optional[List[BoxList]] = None,
    ) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        reduced, rois = features, proposals
        if self.training:
            positives = [r[r.get_field("labels") > 0] for r in rois]
            num = sum(len(p) for p in positives)
            if num == 0:
                return positives, {"loss_mask": zero_connected(self.head)}
            logits = self.head(reduced, boxes_to_rois(positives).to(reduced.device))
            labels = torch.cat([p.get_field("labels") for p in positives])
            tgt = mask_targets(positives, targets, self.resolution).to(logits)
            if tgt.shape[-1] != logits.shape[-1]:
                raise ValueError(
                    f"MODEL.ROI_MASK_HEAD.RESOLUTION ({self.resolution}) must be twice "
                    f"POOLER_RESOLUTION (mask logits are {logits.shape[-1]} wide)"
                )
            sel = logits[torch.arange(num, device=logits.device), labels].float()
            loss = F.binary_cross_entropy_with_logits(sel, tgt)
            return positives, {"loss_mask": loss}
        sizes = [r.bbox.shape[0] for r in rois]  # not len(): symbolic sizes under torch.export
        num = sum(sizes)
        if guard_or_false(num == 0):
            for r in rois:
                r.add_field("mask", reduced.new_zeros(0, 1, self.resolution, self.resolution))
            return rois, {}
        logits = self.head(reduced, boxes_to_rois(rois).to(reduced.device))
        labels = torch.cat([r.get_field("labels") for r in rois])
        probs = logits[torch.arange(num, device=logits.device), labels].float().sigmoid()[:, None]
        for r, p in zip(rois, probs.split(sizes)):
            r.add_field("mask", p)
        return rois, {}


def build_roi_mask_head(cfg, *, in_channels: int, spatial_scale: float) -> ROIMaskHead:
    """The mask head of `cfg.MODEL.ROI_MASK_HEAD` on the reduced C5 map (`in_channels`)."""
    mh = cfg.MODEL.ROI_MASK_HEAD
    if mh.RESOLUTION != 2 * mh.POOLER_RESOLUTION:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.RESOLUTION ({mh.RESOLUTION}) must be twice "
            f"MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION ({mh.POOLER_RESOLUTION}) (one 2x deconv)"
        )
    if any(c <= 0 for c in mh.CONV_LAYERS):
        raise ValueError(f"MODEL.ROI_MASK_HEAD.CONV_LAYERS must be positive, got {mh.CONV_LAYERS}")
    pooler = build_pooler(
        mh, "MODEL.ROI_MASK_HEAD", spatial_scale=spatial_scale, in_channels=in_channels
    )
    head = MaskHead(
        in_channels=in_channels,
        pooler=pooler,
        conv_layers=tuple(mh.CONV_LAYERS),
        num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
    )
    return ROIMaskHead(head=head, resolution=mh.RESOLUTION)
