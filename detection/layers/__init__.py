"""Op wrappers and layers."""

from detection.layers.deform_conv import (
    DeformableConv2d,
    DeformConv2d,
    ModulatedDeformConv2d,
    ModulatedDeformConv2dPack,
    modulated_deform_conv2d,
)
