"""The CPU and CUDA kernels share one definition of their per-element math (csrc/common/
host_device.h: deform_conv_math.h, roi_sampling.h, nms_math.h). Where the two kernels also visit
the samples in the same order, their results are then equal bit for bit: checked here on the
CUDA emulation build (the .cu sources compiled by the host compiler for baseline x86-64, like
the CPU RoI and NMS kernels, so neither contracts a * b + c into an FMA; nvcc does on a real
GPU, whose parity tests compare with a tolerance instead).

Equal: RoIAlign and deformable RoI pooling forward (samples of a bin in the same order), their
input gradient in the deterministic mode (the plane-serial CUDA kernel visits RoIs, bins, samples
and corners in the CPU's order), and NMS (the same IoU compared with the same double threshold),
NaN boxes included."""

import pytest
import torch

from detection import _ext

pytestmark = [
    pytest.mark.skipif(not _ext.HAS_OPS, reason="compiled ops not built"),
    pytest.mark.cuda_emu,
]

CPU = torch.ops.detection


def _rois(num, n_img, height, width, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    xy = (
        torch.rand(num, 2, generator=g, dtype=dtype)
        * torch.tensor([width + 8.0, height + 8.0], dtype=dtype)
        - 6
    )
    wh = (
        torch.rand(num, 2, generator=g, dtype=dtype) * 0.7 * max(height, width) - 1
    )  # some inverted
    batch = torch.randint(0, n_img, (num, 1), generator=g).to(dtype)
    return torch.cat([batch, xy, xy + wh], 1)


def _bitwise_equal(a, b):
    # torch.equal is False for NaN == NaN; equal NaN positions and equal other values
    return (
        a.shape == b.shape
        and torch.equal(a.isnan(), b.isnan())
        and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_cpu_equals_emulated_cuda(cuda_emu_backend, dtype, sampling_ratio, aligned):
    emu = cuda_emu_backend.ops
    x = torch.randn(2, 3, 11, 13, dtype=dtype)
    rois = _rois(30, 2, 11, 13, dtype, seed=1)
    out = CPU.roi_align(x, rois, 0.8, 3, 4, sampling_ratio, aligned)
    assert _bitwise_equal(out, emu.roi_align(x, rois, 0.8, 3, 4, sampling_ratio, aligned))
    grad = torch.randn_like(out)
    args = (grad, rois, 0.8, 3, 4, 2, 3, 11, 13, sampling_ratio, aligned)
    with _deterministic():
        assert _bitwise_equal(CPU._roi_align_backward(*args), emu._roi_align_backward(*args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_offset, with_mask", [(True, True), (True, False), (False, True)])
def test_deform_roi_pool_cpu_equals_emulated_cuda(cuda_emu_backend, dtype, with_offset, with_mask):
    emu = cuda_emu_backend.ops
    x = torch.randn(2, 3, 11, 13, dtype=dtype)
    rois = _rois(30, 2, 11, 13, dtype, seed=2)
    offset = torch.randn(30, 2, 3, 4, dtype=dtype) * 0.5 if with_offset else None
    mask = torch.rand(30, 1, 3, 4, dtype=dtype) if with_mask else None
    args = (x, rois, offset, mask, 3, 4, 0.8, 2, 0.1)
    out = CPU.modulated_deform_roi_pool(*args)
    assert _bitwise_equal(out, emu.modulated_deform_roi_pool(*args))
    grad = torch.randn_like(out)
    bargs = (grad, x, rois, offset, mask, 3, 4, 0.8, 2, 0.1)
    with _deterministic():
        # the input gradient only: the offset/mask gradients sum the channels in another order
        cpu_in = CPU._modulated_deform_roi_pool_backward(*bargs)[0]
        assert _bitwise_equal(cpu_in, emu._modulated_deform_roi_pool_backward(*bargs)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_cpu_equals_emulated_cuda(cuda_emu_backend, dtype, threshold):
    emu = cuda_emu_backend.ops
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(300, 2, generator=g, dtype=dtype) * 100
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g, dtype=dtype) * 40], 1)
    boxes[5, 2] = float("nan")  # NaN in either box's coordinates
    boxes[17, 0] = float("nan")
    boxes[9] = boxes[8]  # IoU exactly 1
    boxes[11, 2] = boxes[11, 0]  # zero area
    boxes[12, 2:] = boxes[12, :2] - 5  # inverted
    scores = torch.rand(300, generator=g, dtype=dtype)
    assert torch.equal(CPU.nms(boxes, scores, threshold), emu.nms(boxes, scores, threshold))


class _deterministic:
    def __enter__(self):
        self.before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.before)
