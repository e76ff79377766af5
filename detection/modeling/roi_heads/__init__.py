"""RoI heads on C5: the shared reduce conv with the box head (with OHEM) and the mask head
(`ROIHeads`), and feature mimicking."""

from detection.modeling.roi_heads.box_head import ROIBoxHead, build_roi_box_head
from detection.modeling.roi_heads.mask_head import ROIMaskHead, build_roi_mask_head
from detection.modeling.roi_heads.mimic import FeatureMimic, build_mimic
from detection.modeling.roi_heads.roi_heads import ROIHeads, build_roi_heads

__all__ = [
    "FeatureMimic",
    "ROIBoxHead",
    "ROIHeads",
    "ROIMaskHead",
    "build_mimic",
    "build_roi_box_head",
    "build_roi_heads",
    "build_roi_mask_head",
]
