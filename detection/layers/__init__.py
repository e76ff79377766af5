"""Op wrappers (`torch.ops.detection.*`) and the layers built on them."""

from detection.layers.batch_norm import FrozenBatchNorm2d
from detection.layers.deform_conv import (
    DeformableConv2d,
    DeformConv2d,
    ModulatedDeformConv2d,
    ModulatedDeformConv2dPack,
    modulated_deform_conv2d,
)
from detection.layers.deform_roi_pool import (
    DeformRoIPoolPack,
    ModulatedDeformRoIPool,
    ModulatedDeformRoIPoolPack,
    modulated_deform_roi_pool,
)
from detection.layers.misc import Conv2d, ConvTranspose2d, Linear
from detection.layers.nms import batched_nms, nms
from detection.layers.norm import get_norm
from detection.layers.roi_align import RoIAlign, roi_align

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "DeformConv2d",
    "DeformRoIPoolPack",
    "DeformableConv2d",
    "FrozenBatchNorm2d",
    "Linear",
    "ModulatedDeformConv2d",
    "ModulatedDeformConv2dPack",
    "ModulatedDeformRoIPool",
    "ModulatedDeformRoIPoolPack",
    "RoIAlign",
    "batched_nms",
    "get_norm",
    "modulated_deform_conv2d",
    "modulated_deform_roi_pool",
    "nms",
    "roi_align",
]
