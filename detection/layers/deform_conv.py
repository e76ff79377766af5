"""Modulated deformable convolution (DCNv2; DCNv1 when ``mask`` is None) and its modules.

Conventions (the project's contract, ``CONVENTIONS.md``; the ones of the original Deformable
ConvNets operators as carried into mmcv):

* shapes: ``input Tensor[N, C, H, W]``, ``weight Tensor[C_out, C/groups, kh, kw]``,
  ``offset Tensor[N, 2*dg*kh*kw, Ho, Wo]``, ``mask Tensor[N, dg*kh*kw, Ho, Wo]``, output
  ``Tensor[N, C_out, Ho, Wo]`` with ``Ho = (H + 2*ph - (dh*(kh-1)+1)) // sh + 1`` (same for W);
  input channel ``c`` belongs to deformable group ``c // (C/dg)``;
* offset layout: for deformable group ``g`` and kernel point ``k = i*kw + j``, channel
  ``2*(g*K+k)`` is the row displacement dy and ``2*(g*K+k)+1`` the column displacement dx
  (interleaved ``[dy, dx]`` pairs, groups outermost; the layout of torchvision's
  ``deform_conv2d``); mask channel ``g*K+k`` multiplies the sample as given (no sigmoid);
* sample position ``y = ho*sh - ph + i*dh + dy``, ``x = wo*sw - pw + j*dw + dx`` (no half-pixel
  shift); a sample is 0 unless ``-1 < y < H`` and ``-1 < x < W``, and inside that band it is the
  bilinear interpolation of the input zero-padded by one pixel;
* gradients: grad_input is the exact transpose of the sampling; grad_offset is the floor-based
  one-sided derivative of the bilinear weights, 0 when ``y <= -1 or y >= H or x <= -1 or
  x >= W``; grad_mask is the sum over channels of grad_column * sampled value;
* ``im2col_step`` bounds how many images share one column buffer; results do not depend on it.

One file of about 400 lines, on purpose: the op's wrapper, its fake and autocast registrations
and its module are one unit (torchvision's `ops/deform_conv.py` layout); its autograd is the
library's own, in C++ (csrc/deform_conv/deform_conv_autograd.cpp), as torchvision's is.

Autocast: on CUDA the op runs its native kernel in the autocast dtype (float16 or bfloat16, all
floating inputs cast to it, accumulation in float32); on CPU, whose kernel supports float32 and
float64, autocast casts the floating inputs to float32. Double backward is not supported.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from detection import _ext
from detection.layers._utils import pair

IntPair = Union[int, tuple[int, int]]

__all__ = [
    "modulated_deform_conv2d",
    "DeformConv2d",
    "DeformableConv2d",
    "ModulatedDeformConv2d",
    "ModulatedDeformConv2dPack",
]


def modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    mask: Optional[Tensor],
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    deform_groups: int = 1,
    im2col_step: int = 64,
) -> Tensor:
    """Modulated deformable convolution (DCNv2); DCNv1 when ``mask`` is None.

    Args:
        input: ``Tensor[N, C, H, W]``.
        offset: ``Tensor[N, 2*deform_groups*kh*kw, Ho, Wo]``, interleaved ``[dy, dx]`` per kernel
            point ``k = i*kw + j``, deformable groups outermost (see the module docstring).
        mask: ``Tensor[N, deform_groups*kh*kw, Ho, Wo]`` multiplying each sample, or None.
        weight: ``Tensor[C_out, C/groups, kh, kw]``.
        bias: ``Tensor[C_out]`` or None.
        stride, padding, dilation: int or (h, w) pair, as in ``torch.nn.functional.conv2d``.
        groups: convolution groups. deform_groups: deformable groups (offset/mask sets).
        im2col_step: at most this many images share one column buffer (memory bound only).

    Returns:
        ``Tensor[N, C_out, Ho, Wo]`` in the dtype of ``input`` (float32/float64 on CPU; also
        float16/bfloat16 on CUDA). All tensors must share dtype and device.
    """
    _ext.require_ops()
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    return torch.ops.detection.modulated_deform_conv2d(
        input, offset, mask, weight, bias, sh, sw, ph, pw, dh, dw,
        int(groups), int(deform_groups), int(im2col_step),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Registration: fake kernels and autocast (autograd is the library's own, in C++), only when the
# compiled library loaded.


def _output_size(size: int, pad: int, dilation: int, kernel: int, stride: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _check_fake(input, tensors: dict) -> None:
    """The device/dtype/rank checks of the C++ kernels, for fake tensors (and mixed devices)."""
    torch._check(
        input.dim() == 4, lambda: "modulated_deform_conv2d: input must be 4-D [N, C, H, W]"
    )
    for name, t in tensors.items():
        if t is None:
            continue
        torch._check(
            t.device == input.device,
            lambda: (
                f"modulated_deform_conv2d: {name} must be on the same device as input "
                f"({input.device}), got {t.device}"
            ),
        )
        torch._check(
            t.dtype == input.dtype,
            lambda: (
                f"modulated_deform_conv2d: {name} must have the same dtype as input "
                f"({input.dtype}), got {t.dtype}"
            ),
        )
        want = 1 if name == "bias" else 4
        torch._check(t.dim() == want, lambda: f"modulated_deform_conv2d: {name} must be {want}-D")


def _result_memory_format(input) -> torch.memory_format:
    """The kernels' `result_memory_format`: the output and grad_input are channels-last where the
    input is channels-last in memory and not also contiguous NCHW, NCHW otherwise."""
    channels_last = input.is_contiguous(memory_format=torch.channels_last)
    return (
        torch.channels_last
        if channels_last and not input.is_contiguous()
        else torch.contiguous_format
    )


def _fake_forward(input, offset, mask, weight, bias, sh, sw, ph, pw, dh, dw, groups, dg, step):
    _check_fake(input, dict(offset=offset, mask=mask, weight=weight, bias=bias))
    n, _, h, w = input.shape
    kh, kw = weight.shape[2], weight.shape[3]
    ho, wo = _output_size(h, ph, dh, kh, sh), _output_size(w, pw, dw, kw, sw)
    return torch.empty(
        (n, weight.shape[0], ho, wo),
        dtype=input.dtype,
        device=input.device,
        memory_format=_result_memory_format(input),
    )


def _fake_backward(grad, input, offset, mask, weight, bias, *params):
    _check_fake(input, dict(grad_output=grad, offset=offset, mask=mask, weight=weight, bias=bias))
    empty = input.new_empty((0,))
    return (
        torch.empty_like(input, memory_format=_result_memory_format(input)),
        offset.new_empty(offset.shape),
        mask.new_empty(mask.shape) if mask is not None else empty,
        weight.new_empty(weight.shape),
        bias.new_empty(bias.shape) if bias is not None else input.new_empty((0,)),
    )


def _cuda_autocast(_keyset, *args):
    """AutocastCUDA: run the native kernel with every floating CUDA input in the autocast dtype."""
    dtype = torch.get_autocast_dtype("cuda")
    cast = [
        a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() and a.is_cuda else a
        for a in args
    ]
    key = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)
    with torch._C._ExcludeDispatchKeyGuard(key):
        return torch.ops.detection.modulated_deform_conv2d.default(*cast)


_LIB = None


def _register() -> None:
    global _LIB
    name = "detection::modulated_deform_conv2d"
    backward_name = "detection::_modulated_deform_conv2d_backward"
    torch.library.register_fake(name)(_fake_forward)
    torch.library.register_fake(backward_name)(_fake_backward)
    # autograd: in C++ (csrc/deform_conv/deform_conv_autograd.cpp)
    # CPU kernel: float32/float64 only, so CPU autocast runs it in float32.
    torch.library.register_autocast(name, "cpu", torch.float32)
    # CUDA: the native kernel in the autocast dtype (read at call time, so float16 or bfloat16).
    _LIB = torch.library.Library("detection", "IMPL")
    _LIB.impl("modulated_deform_conv2d", _cuda_autocast, "AutocastCUDA", with_keyset=True)
    _register_cuda_autocast_python_kernel(torch.ops.detection.modulated_deform_conv2d.default)


def _register_cuda_autocast_python_kernel(op) -> None:
    """The AutocastCUDA rule for the Python dispatcher (torch.compile tracing), as
    register_autocast does. torch 2.11's register_autocast(..., "cpu") puts its float32 rule on
    AutocastCUDA too (2.13 only on AutocastCPU), and py_impl refuses to override a Python kernel:
    ours replaces it."""
    key = torch._C.DispatchKey.AutocastCUDA
    op.py_kernels.pop(key, None)
    op.py_impl(key)(lambda *args: _cuda_autocast(None, *args))


if _ext.HAS_OPS:
    _register()


# ----------------------------------------------------------------------------------------------
# Modules.


class DeformConv2d(nn.Module):
    """The deformable convolution module; every other name in this file is an entry point onto it.

    As a drop-in replacement for ``nn.Conv2d`` (the defaults): ``forward(x: Tensor[N, C_in, H,
    W]) -> Tensor[N, C_out, Ho, Wo]``, the output size of the ``nn.Conv2d`` with these arguments,
    ``weight``/``bias`` with nn.Conv2d's names, shapes and initialisation. The layer predicts its
    own offsets with ``conv_offset`` (zero-initialised, same kernel/stride/padding/dilation, so at
    init the layer is the plain conv, times 0.5 with modulation): with ``modulation=True`` (DCNv2)
    it has ``3*dg*kh*kw`` output channels split in three chunks o1, o2, m: ``offset = cat(o1,
    o2)``, ``mask = sigmoid(m)``; with ``modulation=False`` (DCNv1) ``2*dg*kh*kw`` channels used
    directly as the offset, and no mask.

    Keyword-only options for the other entry points: ``predict_offsets=False`` drops
    ``conv_offset``, and ``forward(x, offset, mask)`` takes them as inputs (``mask`` None for
    DCNv1); ``weight_init="mmcv"`` initialises the weight uniform(+-1/sqrt(C_in*kh*kw)) and the
    bias to zero, as mmcv's modules do.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        modulation: bool = True,
        deform_groups: int = 1,
        *,
        predict_offsets: bool = True,
        weight_init: str = "conv2d",
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        if in_channels % deform_groups:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deform_groups ({deform_groups})"
            )
        if weight_init not in ("conv2d", "mmcv"):
            raise ValueError(f"weight_init must be 'conv2d' or 'mmcv', got {weight_init!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.groups = groups
        self.deform_groups = deform_groups
        self.modulation = modulation
        self.weight_init = weight_init
        self.im2col_step = 64
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()
        self.conv_offset = None
        if predict_offsets:
            k = self.kernel_size[0] * self.kernel_size[1]
            self.conv_offset = _make_conv_offset(self, (3 if modulation else 2) * deform_groups * k)

    def reset_parameters(self) -> None:
        """The weight and bias initialisation of `weight_init` (`conv_offset` stays zero)."""
        k = self.kernel_size[0] * self.kernel_size[1]
        if self.weight_init == "mmcv":
            stdv = 1.0 / math.sqrt(self.in_channels * k)
            nn.init.uniform_(self.weight, -stdv, stdv)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
            return
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight.shape[1] * k)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, x: Tensor, offset: Optional[Tensor] = None, mask: Optional[Tensor] = None
    ) -> Tensor:
        if self.conv_offset is not None:
            if offset is not None or mask is not None:
                raise ValueError(
                    "this layer predicts its own offset and mask (conv_offset); call it as "
                    "layer(x), or build it with predict_offsets=False"
                )
            out = self.conv_offset(x)
            if self.modulation:
                o1, o2, m = torch.chunk(out, 3, dim=1)
                offset, mask = torch.cat((o1, o2), dim=1), torch.sigmoid(m)
            else:
                offset = out
        elif offset is None:
            raise ValueError("offset is required: this layer was built with predict_offsets=False")
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation,
            self.groups, self.deform_groups, self.im2col_step,
        )  # fmt: skip

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.deform_groups != 1:
            s += f", deform_groups={self.deform_groups}"
        if self.bias is None:
            s += ", bias=False"
        if not self.modulation:
            s += ", modulation=False"
        return s


def _make_conv_offset(layer: DeformConv2d, channels: int) -> nn.Conv2d:
    """Zero-initialised offset/mask predictor with the layer's kernel, stride, padding, dilation."""
    conv = nn.Conv2d(
        layer.in_channels, channels, layer.kernel_size, stride=layer.stride,
        padding=layer.padding, dilation=layer.dilation, bias=True,
    )  # fmt: skip
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


# ----------------------------------------------------------------------------------------------
# Entry points: `DeformConv2d` under the names other code bases use. Each only fixes arguments.


class DeformableConv2d(DeformConv2d):
    """The simplest drop-in form: a DCNv2 ``DeformConv2d`` (one deformable group, modulation on)
    with a 3x3 kernel, padding 1 and no bias by default (the usual backbone 3x3 conv before a
    norm)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )


class ModulatedDeformConv2d(DeformConv2d):
    """mmcv's ``ModulatedDeformConv2d`` (argument order and initialisation): DCNv2 taking its
    offset and mask as inputs, ``forward(x, offset, mask)``; ``x: Tensor[N, C_in, H, W]``,
    ``offset: Tensor[N, 2*dg*kh*kw, Ho, Wo]``, ``mask: Tensor[N, dg*kh*kw, Ho, Wo]`` (or None
    for DCNv1) -> ``Tensor[N, C_out, Ho, Wo]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            deform_groups=deform_groups, predict_offsets=False, weight_init="mmcv",
        )  # fmt: skip


class ModulatedDeformConv2dPack(DeformConv2d):
    """mmcv's ``ModulatedDeformConv2dPack`` (argument order and initialisation): DCNv2 predicting
    its own offset and mask with ``conv_offset`` (``3*dg*kh*kw`` channels, see DeformConv2d),
    ``forward(x) -> Tensor[N, C_out, Ho, Wo]``; at init offset = 0 and mask = 0.5.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            deform_groups=deform_groups, weight_init="mmcv",
        )  # fmt: skip
