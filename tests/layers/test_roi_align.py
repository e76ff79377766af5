"""roi_align against torchvision.ops.roi_align (both alignments, forward and backward), gradcheck,
edge cases, the module, opcheck and error messages."""

import math
import os

import numpy as np
import pytest
import torch
import torchvision

from detection import _ext
from detection.layers import RoIAlign, roi_align

pytestmark = pytest.mark.skipif(not _ext.HAS_OPS, reason="detection._C not built")


def _random_rois(num_rois, n_img, width, height, seed, outside=0.0, dtype=torch.float64):
    """(b, x1, y1, x2, y2) in image pixels over a width x height image, reaching `outside` px
    beyond every border."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_rois, 4, generator=g, dtype=torch.float64)
    xy[:, 0::2] = xy[:, 0::2] * (width + 2 * outside) - outside
    xy[:, 1::2] = xy[:, 1::2] * (height + 2 * outside) - outside
    x1, x2 = torch.minimum(xy[:, 0], xy[:, 2]), torch.maximum(xy[:, 0], xy[:, 2])
    y1, y2 = torch.minimum(xy[:, 1], xy[:, 3]), torch.maximum(xy[:, 1], xy[:, 3])
    b = torch.randint(0, n_img, (num_rois,), generator=g).double()
    return torch.stack([b, x1, y1, x2, y2], dim=1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_matches_torchvision_forward_backward(aligned, sampling_ratio, dtype):
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(3, 4, 12, 15, generator=g).to(dtype)
        rois = _random_rois(25, 3, 30, 24, seed, outside=4.0, dtype=dtype)
        size, scale = (3, 4) if seed % 2 else (5, 5), 0.5
        x1 = x.clone().requires_grad_()
        x2 = x.clone().requires_grad_()
        ours = roi_align(x1, rois, size, scale, sampling_ratio, aligned)
        ref = torchvision.ops.roi_align(x2, rois, size, scale, sampling_ratio, aligned)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours, ref, **tol)
        grad = torch.randn(ours.shape, generator=g).to(dtype)
        ours.backward(grad)
        ref.backward(grad)
        torch.testing.assert_close(x1.grad, x2.grad, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels,width", [(20, 37), (600, 40)])
def test_layout_blocks_and_runs_match_torchvision(channels, width, dtype):
    """The CPU kernels convert to and from channels-last in blocks of 16 channels over runs of
    max(16, 16384 // C) pixels of a row (csrc/common/cpu_layout.h), float32 blocks of 16 x 16
    transposed in registers where the CPU has AVX2 or AVX-512: 20 channels end in a block of 4
    and a row of 37 pixels in 5 after two blocks; 600 cut a row of 40 pixels into runs of 27 and
    13 and end in a block of 8. float32 against torchvision in float64: a misplaced element is an
    error of the order of the values."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, 3, width, generator=g, dtype=torch.float64)
    rois = _random_rois(9, 2, 2 * width, 6, seed=1, outside=2.0)
    x1, x2 = x.to(dtype, copy=True).requires_grad_(), x.clone().requires_grad_()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    ours = roi_align(x1, rois.to(dtype), (2, 3), 0.5, 2, True)
    ref = torchvision.ops.roi_align(x2, rois, (2, 3), 0.5, 2, True)
    torch.testing.assert_close(ours, ref.to(dtype), **tol)
    grad = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    ours.backward(grad.to(dtype))
    ref.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad.to(dtype), **tol)
    # an input channels-last in memory is read in place, and a channels-last gradient too
    x3 = x.to(dtype).to(memory_format=torch.channels_last).requires_grad_()
    out3 = roi_align(x3, rois.to(dtype), (2, 3), 0.5, 2, True)
    torch.testing.assert_close(out3, ours, rtol=0, atol=0)
    out3.backward(grad.to(dtype).to(memory_format=torch.channels_last))
    torch.testing.assert_close(x3.grad, x1.grad, rtol=0, atol=0)


@pytest.mark.parametrize("sampling_ratio", [0, 40])
def test_rois_far_outside_match_torchvision(sampling_ratio):
    """The kernels evaluate only the samples inside the band [-1, H] x [-1, W] (a binary search
    per bin and axis); boxes reaching far outside the map, with large adaptive or fixed grids,
    must give exactly what torchvision's full loop over the grid gives."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 12, 15, generator=g, dtype=torch.float64)
    rois = _random_rois(20, 2, 30, 24, seed=7, outside=300.0)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = roi_align(x1, rois, (3, 4), 0.5, sampling_ratio, True)
    ref = torchvision.ops.roi_align(x2, rois, (3, 4), 0.5, sampling_ratio, True)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    ours.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)


def _in_band_fraction(start, size, pooled, extent):
    """Per bin along one axis: the fraction of the adaptive grid's samples inside [-1, extent]
    (CONVENTIONS.md: grid = ceil(size / pooled), samples at (i + 0.5) * bin / grid)."""
    grid = math.ceil(size / pooled)
    i = np.arange(grid, dtype=np.float64)
    bin_size = size / pooled
    return np.array([np.count_nonzero((c >= -1) & (c <= extent)) / grid
                     for c in (start + p * bin_size + (i + 0.5) * bin_size / grid
                               for p in range(pooled))])  # fmt: skip


HUGE_ROI_CODE = """
import sys, torch
from detection.layers import roi_align, modulated_deform_roi_pool
x = torch.ones(1, 2, 12, 15, dtype=torch.float64, requires_grad=True)
rois = torch.tensor([[0, -5e4, -4e4, 5e4, 6e4], [0, -1e30, -1e30, 1e30, 1e30]], dtype=torch.float64)
out = roi_align(x, rois, 7, 1.0, 0, True)
out.backward(torch.ones_like(out))
pool = modulated_deform_roi_pool(x.detach(), rois, torch.zeros(2, 2, 7, 7, dtype=torch.float64),
                                 torch.ones(2, 1, 7, 7, dtype=torch.float64), output_size=7,
                                 spatial_scale=1.0, sampling_ratio=0)
torch.save([out.detach(), x.grad, pool], sys.argv[1])
"""


def test_huge_rois_cost_their_part_inside_the_map(tmp_path):
    """A 1e5-pixel box with an adaptive grid (20000 x 14286 samples per bin: 1.4e10 per RoI and
    channel if every sample were evaluated) used to run for minutes; a 1e30-pixel one overflowed
    the grid's int cast. In a subprocess with a time limit, so a regression fails instead of
    hanging. On a constant input every in-band sample reads 1, so each bin is the fraction of its
    grid inside the band, computed here from the convention."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = tmp_path / "huge.pt"
    res = subprocess.run([sys.executable, "-c", HUGE_ROI_CODE, str(path)], cwd=root,
                         env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    out, grad, pool = torch.load(path)
    # aligned: feature coordinates shift by -0.5
    fy = _in_band_fraction(-4e4 - 0.5, 1e5, 7, 12)
    fx = _in_band_fraction(-5e4 - 0.5, 1e5, 7, 15)
    expected = torch.from_numpy(np.outer(fy, fx))
    torch.testing.assert_close(out[0, 0], expected, rtol=1e-9, atol=1e-15)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert out[1].abs().max() < 1e-30  # 1e30 px: every bin has ~0 of its grid in the map
    torch.testing.assert_close(pool, out)
    # the input gradient of a sum of bins: each pixel receives its samples' weights / count,
    # in total the sum of the outputs (every in-band sample spreads weight 1 over 4 corners)
    torch.testing.assert_close(grad.sum(), out.sum(), rtol=1e-9, atol=0)


def test_list_of_boxes_matches_tensor_rois():
    x = torch.randn(2, 3, 10, 10)
    boxes = [
        torch.tensor([[1.0, 1.0, 6.0, 5.0], [0.0, 2.0, 9.0, 9.0]]),
        torch.tensor([[2.5, 3.5, 4.0, 8.0]]),
    ]
    ours = roi_align(x, boxes, 2, 1.0, 2)
    ref = torchvision.ops.roi_align(x, boxes, 2, 1.0, 2, True)
    torch.testing.assert_close(ours, ref)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [0, 0.0, 2.0, 9.0, 9.0], [1, 2.5, 3.5, 4.0, 8.0]])
    torch.testing.assert_close(roi_align(x, rois, 2, 1.0, 2), ours, rtol=0, atol=0)


@pytest.mark.parametrize("aligned", [True, False])
def test_gradcheck(aligned):
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 2, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
        rois = _random_rois(4, 2, 16, 14, seed, outside=2.0)
        assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (2, 3), 0.5, 2, aligned), (x,))


def test_edge_cases_outside_degenerate_zero_rois():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    rois = torch.tensor(
        [
            [0, -20.0, -20.0, -10.0, -10.0],
            [0, 30.0, 1.0, 40.0, 5.0],
            [0, -3.0, -3.0, 3.0, 3.0],
            [0, 2.0, 2.0, 2.0, 2.0],
            [0, 5.5, 5.5, 9.0, 9.0],
        ],
        dtype=torch.float64,
    )
    for aligned in (True, False):
        for sr in (0, 2):
            ours = roi_align(x, rois, 3, 1.0, sr, aligned)
            ref = torchvision.ops.roi_align(x, rois, 3, 1.0, sr, aligned)
            torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
            assert torch.all(ours[:2] == 0)
    empty = roi_align(x.requires_grad_(), torch.zeros(0, 5, dtype=torch.float64), 3)
    assert empty.shape == (0, 2, 3, 3)
    empty.sum().backward()
    assert torch.all(x.grad == 0)


def test_inverted_boxes():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    rois = torch.tensor(
        [[0, 6.0, 1.0, 2.0, 5.0], [0, 6.0, 7.0, 1.0, 2.0], [0, 1.0, 6.0, 5.0, 2.0]],
        dtype=torch.float64,
    )
    # aligned with an adaptive grid: an inverted box has no samples (legacy boxes are >= 1 px)
    assert torch.all(roi_align(x, rois, 2, 1.0, 0, True) == 0)
    for aligned in (True, False):
        ours = roi_align(x, rois, 2, 1.0, 2, aligned)
        torch.testing.assert_close(ours, torchvision.ops.roi_align(x, rois, 2, 1.0, 2, aligned))


def test_module():
    module = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=2)
    assert module.aligned and "aligned=True" in repr(module)
    x = torch.randn(2, 3, 20, 20)
    rois = _random_rois(6, 2, 80, 80, seed=1, dtype=torch.float32)
    torch.testing.assert_close(module(x, rois), roi_align(x, rois, 7, 0.25, 2, True))


def test_opcheck():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(5, 2, 16, 18, seed=3, outside=1.0)
    for aligned in (True, False):
        torch.library.opcheck(
            torch.ops.detection.roi_align.default, (x, rois, 0.5, 2, 3, 2, aligned)
        )
    grad = torch.randn(5, 3, 2, 3, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.detection._roi_align_backward.default,
        (grad, rois, 0.5, 2, 3, 2, 3, 9, 8, 0, True),
    )


def test_double_backward_raises():
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.5, 3.5, 3.2]], dtype=torch.float64)
    out = roi_align(x, rois, 2)
    v = torch.ones_like(out, requires_grad=True)  # the input gradient is linear in grad_output
    (g,) = torch.autograd.grad(out, x, v, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_autocast_runs_in_float32():
    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0, 0.5, 0.5, 3.5, 3.2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(x.bfloat16(), rois, 2)
    assert out.dtype == torch.float32


def test_bad_input_raises_clear_errors():
    x = torch.randn(2, 2, 6, 6)
    with pytest.raises(ValueError, match=r"Tensor\[R, 5\]"):
        roi_align(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"rois\[1\] must be a Tensor\[Ri, 4\]"):
        roi_align(x, [torch.zeros(1, 4), torch.zeros(1, 5)], 2)
    with pytest.raises(RuntimeError, match=r"rois must be a Tensor\[R, 5\]"):
        torch.ops.detection.roi_align(x, torch.zeros(3, 6), 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match="batch index"):
        roi_align(x, torch.tensor([[5, 0.0, 0.0, 2.0, 2.0]]), 2)
    with pytest.raises(RuntimeError, match="batch index"):
        roi_align(x, torch.tensor([[float("nan"), 0.0, 0.0, 2.0, 2.0]]), 2)
    with pytest.raises(RuntimeError, match="input must be a 4-D"):
        roi_align(x[0], torch.zeros(0, 5), 2)
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        roi_align(x, torch.zeros(0, 5), 2, sampling_ratio=-1)
    with pytest.raises(RuntimeError, match="input must be a floating"):
        roi_align(x.long(), torch.zeros(0, 5), 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_cuda_kernels_match_torchvision(cuda_backend, aligned, dtype, sampling_ratio):
    """The CUDA kernels on every CUDA backend at hand (the real GPU when visible, the CUDA
    emulation always), forward and backward ops, against torchvision in float64."""
    b = cuda_backend
    x = torch.randn(2, 8, 20, 25)
    rois = _random_rois(64, 2, 50, 40, seed=5, outside=3.0, dtype=torch.float32)
    ours = b.ops.roi_align(b.to(x, dtype), b.to(rois, dtype), 0.5, 7, 7, sampling_ratio, aligned)
    assert ours.dtype == dtype
    # the reference sees the very values the kernel sees: input and rois rounded to dtype (a
    # float16 / bfloat16 rounding of the boxes alone moves the bins by more than the tolerance)
    xr = x.to(dtype).double().requires_grad_()
    ref = torchvision.ops.roi_align(xr, rois.to(dtype).double(), 7, 0.5, sampling_ratio, aligned)
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}.get(dtype, 3e-2)
    torch.testing.assert_close(ours.double().cpu(), ref.detach(), rtol=tol, atol=tol)
    grad = torch.randn_like(ref).to(dtype).double()
    grad_x = b.ops._roi_align_backward(
        b.to(grad, dtype), b.to(rois, dtype), 0.5, 7, 7, *x.shape, sampling_ratio, aligned
    )
    ref.backward(grad)
    assert grad_x.dtype == dtype
    torch.testing.assert_close(grad_x.double().cpu(), xr.grad, rtol=tol, atol=tol)
    cpu = roi_align(x, rois, 7, 0.5, sampling_ratio, aligned)
    if dtype == torch.float32:
        torch.testing.assert_close(ours.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_cuda_kernels_empty_zero_channels_and_non_contiguous(cuda_backend):
    """No RoIs, zero channels, an empty image batch and non-contiguous input / grad on the CUDA
    kernels, against the CPU op (float64)."""
    b = cuda_backend
    cpu = torch.ops.detection
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    rois = _random_rois(6, 2, 20, 18, seed=3, outside=2.0)
    cases = [
        (x, rois[:0]),  # no RoIs
        (x[:, :0], rois),  # zero channels
        (x.transpose(2, 3), rois),  # non-contiguous input
        (x.contiguous(memory_format=torch.channels_last), rois),
    ]
    for i, (inp, r) in enumerate(cases):
        expected = cpu.roi_align(inp, r, 0.5, 3, 2, 2, True)
        out = b.ops.roi_align(b.to(inp), b.to(r), 0.5, 3, 2, 2, True)
        assert out.shape == expected.shape, i
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-12, atol=1e-12, msg=str(i))
        grad = torch.randn(expected.shape, dtype=torch.float64).transpose(2, 3).contiguous()
        grad = grad.transpose(2, 3)  # non-contiguous
        g_cpu = cpu._roi_align_backward(grad, r, 0.5, 3, 2, *inp.shape, 2, True)
        g = b.ops._roi_align_backward(b.to(grad), b.to(r), 0.5, 3, 2, *inp.shape, 2, True)
        assert g.shape == inp.shape, i
        torch.testing.assert_close(g.cpu(), g_cpu, rtol=1e-12, atol=1e-12, msg=str(i))
    # an empty image batch with no RoIs
    g = b.ops._roi_align_backward(b.to(torch.zeros(0, 3, 3, 2, dtype=torch.float64)),
                                  b.to(rois[:0]), 0.5, 3, 2, 0, 3, 9, 10, 2, True)  # fmt: skip
    assert g.shape == (0, 3, 9, 10)
