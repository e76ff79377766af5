"""Region proposal network on C4: head, anchor targets / losses and proposal generation."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from detection.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from detection.modeling.box_coder import BoxCoder
from detection.modeling.matcher import Matcher
from detection.modeling.rpn.anchor_generator import AnchorGenerator
from detection.modeling.rpn.inference import RPNPostProcessor
from detection.modeling.rpn.loss import RPNLossComputation
from detection.structures.bounding_box import BoxList
from detection.structures.image_list import ImageList


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to `A` objectness logits and `4A` box deltas per location.

    Input `Tensor[N, C, H, W]`; outputs `Tensor[N, A, H, W]` and `Tensor[N, 4A, H, W]` (channel
    `4a + k` is delta k of anchor a).
    """

    def __init__(self, in_channels: int, head_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, head_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(head_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(head_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        t = F.relu(self.conv(x))
        return self.cls_logits(t), self.bbox_pred(t)


def flatten_head_outputs(
    objectness: torch.Tensor, deltas: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """`[N, A, H, W]`, `[N, 4A, H, W]` -> `[N, H*W*A]`, `[N, H*W*A, 4]` in (y, x, a) order."""
    n, a, h, w = objectness.shape
    obj = objectness.permute(0, 2, 3, 1).reshape(n, -1)
    d = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    return obj, d


class RPN(nn.Module):
    """`forward(images, features, targets) -> (proposals: one BoxList per image, losses)`;
    `features` is the backbone's dict, the RPN runs on `features[in_feature]` ("C4").

    Proposals carry the field "objectness" (logits) and are detached from the graph. Losses (in
    training): `loss_objectness` and `loss_rpn_box_reg`.
    """

    def __init__(
        self,
        *,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        loss_evaluator: RPNLossComputation,
        post_processor_train: RPNPostProcessor,
        post_processor_test: RPNPostProcessor,
        in_feature: str = "C4",
    ) -> None:
        super().__init__()
        self.in_feature = in_feature
        self.anchor_generator = anchor_generator
        self.head = head
        self.loss_evaluator = loss_evaluator
        self.post_processor_train = post_processor_train
        self.post_processor_test = post_processor_test

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        targets: Optional[List[BoxList]] = None,
    ) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        feature = features[self.in_feature]
        objectness, deltas = self.head(feature)
        anchors = self.anchor_generator(images.image_sizes, feature)
        obj, d = flatten_head_outputs(objectness.float(), deltas.float())  # float32 under autocast
        if self.training:
            if targets is None:
                raise ValueError("targets must be given in training mode")
            with torch.no_grad():
                proposals = self.post_processor_train(anchors, obj.detach(), d.detach())
            loss_obj, loss_reg = self.loss_evaluator(anchors, obj, d, targets)
            return proposals, {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg}
        proposals = self.post_processor_test(anchors, obj, d)
        return proposals, {}


def build_rpn(cfg, in_channels: int) -> RPN:
    """The RPN of `cfg.MODEL.RPN` on a feature map of `in_channels` channels at stride 16."""
    r = cfg.MODEL.RPN
    if r.ANCHOR_STRIDE != 16:
        raise ValueError(
            f"MODEL.RPN.ANCHOR_STRIDE must be 16 (the RPN runs on C4), got {r.ANCHOR_STRIDE}"
        )
    if r.NMS_THRESH <= 0 or r.NMS_THRESH > 1:
        raise ValueError(f"MODEL.RPN.NMS_THRESH must be in (0, 1], got {r.NMS_THRESH}")
    for key in (
        "PRE_NMS_TOP_N_TRAIN",
        "PRE_NMS_TOP_N_TEST",
        "POST_NMS_TOP_N_TRAIN",
        "POST_NMS_TOP_N_TEST",
    ):
        if getattr(r, key) <= 0:
            raise ValueError(f"MODEL.RPN.{key} must be positive, got {getattr(r, key)}")
    anchor_generator = AnchorGenerator(
        sizes=tuple(r.ANCHOR_SIZES),
        aspect_ratios=tuple(r.ASPECT_RATIOS),
        stride=r.ANCHOR_STRIDE,
        straddle_thresh=r.STRADDLE_THRESH,
    )
    head = RPNHead(in_channels, r.HEAD_CHANNELS, anchor_generator.num_anchors_per_location())
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    loss = RPNLossComputation(
        matcher=Matcher(r.FG_IOU_THRESHOLD, r.BG_IOU_THRESHOLD, allow_low_quality_matches=True),
        sampler=BalancedPositiveNegativeSampler(r.BATCH_SIZE_PER_IMAGE, r.POSITIVE_FRACTION),
        box_coder=coder,
        smooth_l1_beta=r.SMOOTH_L1_BETA,
    )

    def post(train: bool) -> RPNPostProcessor:
        return RPNPostProcessor(
            pre_nms_top_n=r.PRE_NMS_TOP_N_TRAIN if train else r.PRE_NMS_TOP_N_TEST,
            post_nms_top_n=r.POST_NMS_TOP_N_TRAIN if train else r.POST_NMS_TOP_N_TEST,
            nms_thresh=r.NMS_THRESH,
            min_size=r.MIN_SIZE,
            box_coder=coder,
        )

    return RPN(
        anchor_generator=anchor_generator,
        head=head,
        loss_evaluator=loss,
        post_processor_train=post(True),
        post_processor_test=post(False),
    )
