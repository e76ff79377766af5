"""RoI heads on C5: box head (with OHEM), mask head, feature mimicking."""

from detection.modeling.roi_heads.box_head import ROIBoxHead, build_roi_box_head
from detection.modeling.roi_heads.mask_head import (
    ROIMaskHead,
    build_roi_mask_head,
    paste_masks_in_image,
)
from detection.modeling.roi_heads.mimic import FeatureMimic, build_mimic

__all__ = [
    "FeatureMimic",
    "ROIBoxHead",
    "ROIMaskHead",
    "build_mimic",
    "build_roi_box_head",
    "build_roi_mask_head",
    "paste_masks_in_image",
]
