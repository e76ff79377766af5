"""Data structures: BoxList (boxes + fields), ImageList (padded batch), SegmentationMask."""

from detection.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList
from detection.structures.image_list import ImageList, to_image_list
from detection.structures.segmentation_mask import SegmentationMask

__all__ = [
    "BoxList",
    "FLIP_LEFT_RIGHT",
    "FLIP_TOP_BOTTOM",
    "ImageList",
    "SegmentationMask",
    "to_image_list",
]
