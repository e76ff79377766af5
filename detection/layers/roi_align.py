"""RoIAlign (`torch.ops.detection.roi_align`).

Semantics (torchvision.ops.roi_align / detectron2):
- input: Tensor[N, C, H, W]; rois: Tensor[R, 5] (batch_index, x1, y1, x2, y2) in input-image
  pixels, or a list of Tensor[Ri, 4] per image; output Tensor[R, C, ph, pw].
- The box in feature coordinates is `x * spatial_scale - 0.5` when ``aligned=True`` (a pixel's
  value sits at its centre, so a box [0, 1] covers exactly the first pixel: detectron2), or
  `x * spatial_scale` with width/height clamped to at least 1 when ``aligned=False`` (legacy
  maskrcnn-benchmark / Detectron).
- Each of the ph x pw bins averages a grid of `sampling_ratio` x `sampling_ratio` bilinear samples
  at `(i + 0.5) * bin / grid` (adaptive `ceil(roi_size / output_size)` when 0).
- Samples beyond one pixel outside the map read 0 (and count in the average); samples within that
  band are clamped to the border.

Autocast: the kernels are float32/float64 on CPU; under autocast (CPU or CUDA) the op runs in
float32 and returns float32. Double backward is not supported.
"""

from typing import Sequence, Union

import torch
from torch import Tensor, nn

from detection import _ext
from detection.layers._utils import RoIs, convert_boxes_to_roi_format, pair

__all__ = ["roi_align", "RoIAlign"]


def roi_align(
    input: Tensor,
    rois: RoIs,
    output_size: Union[int, Sequence[int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """Pool `rois` (Tensor[R, 5] or list of Tensor[Ri, 4]) from `input` (Tensor[N, C, H, W]) into
    Tensor[R, C, output_size[0], output_size[1]]; see the module docstring for the semantics."""
    _ext.require_ops()
    ph, pw = pair(output_size, "output_size")
    rois = convert_boxes_to_roi_format(rois)
    return torch.ops.detection.roi_align(
        input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned)
    )


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`; forward(input, rois) -> Tensor[R, C, ph, pw]."""

    def __init__(
        self,
        output_size: Union[int, Sequence[int]],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = pair(output_size, "output_size")
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


# Registration: fake kernels and autocast (autograd is the library's own, in C++), only when the
# compiled library loaded.


def _fake_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: "roi_align: input must be Tensor[N, C, H, W]")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "roi_align: rois must be [R, 5]")
    return input.new_empty((rois.size(0), input.size(1), pooled_height, pooled_width))


def _fake_backward(grad, rois, spatial_scale, ph, pw, batch_size, channels, height, width, sr, al):
    return grad.new_empty((batch_size, channels, height, width))


def _register() -> None:
    torch.library.register_fake("detection::roi_align")(_fake_forward)
    torch.library.register_fake("detection::_roi_align_backward")(_fake_backward)
    # autograd: in C++ (csrc/roi_align/roi_align_autograd.cpp)
    for device_type in ("cpu", "cuda"):
        torch.library.register_autocast("detection::roi_align", device_type, torch.float32)


if _ext.HAS_OPS:
    _register()
