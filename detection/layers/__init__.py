from detection.layers.deform_roi_pool import (
    DeformRoIPoolPack,
    ModulatedDeformRoIPool,
    ModulatedDeformRoIPoolPack,
    modulated_deform_roi_pool,
)
from detection.layers.nms import batched_nms, nms
from detection.layers.roi_align import RoIAlign, roi_align
