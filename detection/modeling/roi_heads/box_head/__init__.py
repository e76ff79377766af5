"""The box head, split by role like `rpn/`: `feature_extractor` (pooling + two fc layers),
`predictor` (class logits, box deltas), `loss` (RoI sampling, per-RoI losses, OHEM),
`inference` (detections) and `box_head` (`ROIBoxHead`, which composes them, and its builder)."""

from detection.modeling.roi_heads.box_head.box_head import (
    BOX_FEATURES,
    ROIBoxHead,
    build_roi_box_head,
)
from detection.modeling.roi_heads.box_head.feature_extractor import BoxHeadFeatureExtractor
from detection.modeling.roi_heads.box_head.inference import BoxPostProcessor
from detection.modeling.roi_heads.box_head.loss import (
    RoISampler,
    fastrcnn_losses,
    per_roi_losses,
    select_hardest,
)
from detection.modeling.roi_heads.box_head.predictor import BoxPredictor

__all__ = [
    "BOX_FEATURES",
    "BoxHeadFeatureExtractor",
    "BoxPostProcessor",
    "BoxPredictor",
    "ROIBoxHead",
    "RoISampler",
    "build_roi_box_head",
    "fastrcnn_losses",
    "per_roi_losses",
    "select_hardest",
]
