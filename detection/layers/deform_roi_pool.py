"""Modulated deformable RoI pooling (`torch.ops.detection.modulated_deform_roi_pool`).

Semantics (CONVENTIONS.md; mmcv's RoIAlign-based DeformRoIPool plus a mask):
- input: Tensor[N, C, H, W]; rois: Tensor[R, 5] (batch_index, x1, y1, x2, y2) in input-image
  pixels, or a list of Tensor[Ri, 4] per image; offset: Tensor[R, 2, ph, pw] or None; mask:
  Tensor[R, 1, ph, pw] or None; output: Tensor[R, C, ph, pw].
- The RoI box is the aligned RoIAlign box (`x * spatial_scale - 0.5`, no rounding, no minimum
  size); bins average `sampling_ratio`^2 samples (adaptive `ceil(roi_size / output_size)` if 0).
- offset[r, 0] shifts bin (i, j) along x by `gamma * roi_width * offset[r, 0, i, j]`,
  offset[r, 1] along y by `gamma * roi_height * offset[r, 1, i, j]` (x first: the reverse of the
  deformable convolution's order).
- mask[r, 0, i, j] multiplies bin (i, j) of every channel (the sigmoid belongs to the predictor).
- With offset None (or 0) and mask None this is `roi_align(..., aligned=True)`.
- grad_offset follows the reference operator: the floor-based bilinear derivative evaluated at the
  unclamped sample coordinate (extrapolated inside the clamped one-pixel border band).

Autocast: under autocast (CPU or CUDA) the op runs in float32 and returns float32. Double backward
is not supported.
"""

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from detection import _ext
from detection.layers._utils import RoIs, convert_boxes_to_roi_format, pair

__all__ = [
    "modulated_deform_roi_pool",
    "ModulatedDeformRoIPool",
    "DeformRoIPoolPack",
    "ModulatedDeformRoIPoolPack",
]


def modulated_deform_roi_pool(
    input: Tensor,
    rois: RoIs,
    offset: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    *,
    output_size: Union[int, Sequence[int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    gamma: float = 0.1,
) -> Tensor:
    """Deformable RoI pooling of `rois` from `input` (Tensor[N, C, H, W]) into
    Tensor[R, C, ph, pw], with optional per-bin offsets Tensor[R, 2, ph, pw] (x, y; fractions of
    the RoI size scaled by `gamma`) and mask Tensor[R, 1, ph, pw]; see the module docstring."""
    _ext.require_ops()
    ph, pw = pair(output_size, "output_size")
    rois = convert_boxes_to_roi_format(rois)
    return torch.ops.detection.modulated_deform_roi_pool(
        input, rois, offset, mask, ph, pw, float(spatial_scale), int(sampling_ratio), float(gamma)
    )


class ModulatedDeformRoIPool(nn.Module):
    """Module form of :func:`modulated_deform_roi_pool`;
    forward(input, rois, offset=None, mask=None) -> Tensor[R, C, ph, pw]."""

    def __init__(
        self,
        output_size: Union[int, Sequence[int]],
        spatial_scale: float = 1.0,
        sampling_ratio: int = 0,
        gamma: float = 0.1,
    ) -> None:
        super().__init__()
        self.output_size = pair(output_size, "output_size")
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.gamma = float(gamma)

    def forward(
        self,
        input: Tensor,
        rois: RoIs,
        offset: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
    ) -> Tensor:
        return modulated_deform_roi_pool(
            input,
            rois,
            offset,
            mask,
            output_size=self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            gamma=self.gamma,
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, gamma={self.gamma}"
        )


def _fc_branch(in_features: int, hidden: int, out_features: int, num_hidden: int) -> nn.Sequential:
    """`num_hidden` x (Linear-ReLU) then a zero-initialised Linear(hidden -> out_features)."""
    layers: list[nn.Module] = []
    for i in range(num_hidden):
        layers += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.ReLU(inplace=True)]
    last = nn.Linear(hidden, out_features)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class DeformRoIPoolPack(ModulatedDeformRoIPool):
    """Deformable RoI pooling with its own offset predictor (DCNv1 paper / DCNv2 paper sec. 3.3).

    An offset-free pooling Tensor[R, C, ph, pw] is flattened into `offset_fc` = Linear(ph*pw*C ->
    fc_channels) - ReLU - Linear(fc_channels -> fc_channels) - ReLU - Linear(fc_channels ->
    ph*pw*2), whose last Linear is zero-initialised (offset 0 at init); the result, viewed as
    Tensor[R, 2, ph, pw] (x, y), drives the deformable pooling. forward(input, rois) ->
    Tensor[R, C, ph, pw].
    """

    def __init__(
        self,
        output_size: Union[int, Sequence[int]],
        spatial_scale: float,
        sampling_ratio: int,
        gamma: float,
        in_channels: int,
        fc_channels: int = 1024,
    ) -> None:
        super().__init__(output_size, spatial_scale, sampling_ratio, gamma)
        self.in_channels = int(in_channels)
        self.fc_channels = int(fc_channels)
        ph, pw = self.output_size
        self.offset_fc = _fc_branch(ph * pw * in_channels, fc_channels, ph * pw * 2, num_hidden=2)

    def _pool_and_predict_input(self, input: Tensor, rois: RoIs) -> tuple[Tensor, Tensor]:
        rois = convert_boxes_to_roi_format(rois)
        features = super().forward(input, rois).flatten(1)
        return rois, features

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:  # type: ignore[override]
        rois, features = self._pool_and_predict_input(input, rois)
        offset = self.offset_fc(features).view(-1, 2, *self.output_size)
        return super().forward(input, rois, offset)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", in_channels={self.in_channels}, fc_channels={self.fc_channels}"
        )


class ModulatedDeformRoIPoolPack(DeformRoIPoolPack):
    """DeformRoIPoolPack plus a mask predictor (DCNv2 paper sec. 3.3).

    The same offset-free pooling also feeds `mask_fc` = Linear(ph*pw*C -> fc_channels) - ReLU -
    Linear(fc_channels -> ph*pw) (zero-initialised) - Sigmoid, viewed as Tensor[R, 1, ph, pw]: at
    init offset = 0 and mask = 0.5. forward(input, rois) -> Tensor[R, C, ph, pw].
    """

    def __init__(
        self,
        output_size: Union[int, Sequence[int]],
        spatial_scale: float,
        sampling_ratio: int,
        gamma: float,
        in_channels: int,
        fc_channels: int = 1024,
    ) -> None:
        super().__init__(
            output_size, spatial_scale, sampling_ratio, gamma, in_channels, fc_channels
        )
        ph, pw = self.output_size
        self.mask_fc = _fc_branch(ph * pw * in_channels, fc_channels, ph * pw, num_hidden=1)
        self.mask_fc.append(nn.Sigmoid())

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:  # type: ignore[override]
        rois, features = self._pool_and_predict_input(input, rois)
        offset = self.offset_fc(features).view(-1, 2, *self.output_size)
        mask = self.mask_fc(features).view(-1, 1, *self.output_size)
        return ModulatedDeformRoIPool.forward(self, input, rois, offset, mask)


# Registration: fake kernels and autocast (autograd is the library's own, in C++), only when the
# compiled library loaded.

_NAME = "detection::modulated_deform_roi_pool"
_BACKWARD_NAME = "detection::_modulated_deform_roi_pool_backward"


def _fake_forward(input, rois, offset, mask, pooled_height, pooled_width, scale, sr, gamma):
    torch._check(input.dim() == 4, lambda: "modulated_deform_roi_pool: input must be [N, C, H, W]")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "rois must be Tensor[R, 5]")
    return input.new_empty((rois.size(0), input.size(1), pooled_height, pooled_width))


def _fake_backward(grad, input, rois, offset, mask, pooled_height, pooled_width, scale, sr, gamma):
    # all three are contiguous, like the kernels' results
    grad_offset = offset.new_empty(offset.shape) if offset is not None else input.new_empty((0,))
    grad_mask = mask.new_empty(mask.shape) if mask is not None else input.new_empty((0,))
    return input.new_empty(input.shape), grad_offset, grad_mask


def _register() -> None:
    torch.library.register_fake(_NAME)(_fake_forward)
    torch.library.register_fake(_BACKWARD_NAME)(_fake_backward)
    # autograd: in C++ (csrc/deform_roi_pool/deform_roi_pool_autograd.cpp)
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast(_NAME, device_type, torch.float32)


if _ext.HAS_OPS:
    _register()
