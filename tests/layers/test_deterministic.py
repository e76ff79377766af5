"""Deterministic mode of the deformable conv and RoI ops.

With ``torch.use_deterministic_algorithms(True)`` the backward of every op must be bit-identical
from run to run. On CPU the kernels use no floating-point atomics at all (col2im and the RoI
input gradients run over owned input planes / channel chunks of fixed size, summed in a fixed
order), so the gradients are also bit-identical across thread counts; on CUDA the deterministic
mode switches the atomic scatters to plane-serial kernels. The CPU checks run everywhere; the
CUDA ones on every CUDA backend at hand (`cuda_backend`: the real GPU when visible, the CUDA
emulation always; the emulator runs the blocks of each launch in a different order, so atomic
scatters differ from run to run there too).
"""

import contextlib

import pytest
import torch

from detection import _ext
from detection.layers import modulated_deform_conv2d, modulated_deform_roi_pool, roi_align

needs_ops = pytest.mark.skipif(not _ext.HAS_OPS, reason="compiled ops not built")
pytestmark = needs_ops


@contextlib.contextmanager
def deterministic(threads=None):
    old_det = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _dcn_case(device, seed=0, n=2, c=48, cout=16, h=13, w=11, dg=2, groups=1):
    g = torch.Generator().manual_seed(seed)
    k = 3
    x = torch.randn(n, c, h, w, generator=g)
    # large offsets: many samples of different kernel points land on the same input pixels
    offset = torch.randn(n, 2 * dg * k * k, h, w, generator=g) * 3
    mask = torch.rand(n, dg * k * k, h, w, generator=g)
    weight = torch.randn(cout, c // groups, k, k, generator=g)
    bias = torch.randn(cout, generator=g)
    grad = torch.randn(n, cout, h, w, generator=g)
    return (
        [t.to(device) for t in (x, offset, mask, weight, bias)],
        grad.to(device),
        dict(padding=1, deform_groups=dg, groups=groups),
    )


def _dcn_grads(device, **case):
    tensors, grad, kw = _dcn_case(device, **case)
    leaves = [t.clone().requires_grad_() for t in tensors]
    out = modulated_deform_conv2d(*leaves, **kw)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in leaves]


def _roi_case(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 40, 12, 14, generator=g)
    n = 64
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 80 + 8
    rois = torch.cat(
        [torch.randint(0, 2, (n, 1), generator=g).float(), xy, xy + wh], dim=1
    )  # heavily overlapping RoIs: many bins scatter into the same pixels
    offset = torch.randn(n, 2, 7, 7, generator=g) * 0.2
    mask = torch.rand(n, 1, 7, 7, generator=g)
    grad = torch.randn(n, 40, 7, 7, generator=g)
    return [t.to(device) for t in (x, rois, offset, mask, grad)]


def _roi_grads(device):
    x, rois, offset, mask, grad = _roi_case(device)
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
    out = modulated_deform_roi_pool(
        leaves[0], rois, leaves[1], leaves[2], output_size=7, spatial_scale=1 / 8, sampling_ratio=2
    )
    out.backward(grad)
    xa = x.clone().requires_grad_()
    out_a = roi_align(xa, rois, 7, 1 / 8, 2, True)
    out_a.backward(grad)
    return [t.grad for t in leaves] + [xa.grad]


def _assert_bitwise(first, second, what):
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), (what, i, (a - b).abs().max().item())


@pytest.mark.parametrize("groups", [1, 2])
def test_cpu_deform_conv_backward_bitwise_across_runs_and_threads(groups):
    with deterministic(threads=2):
        first = _dcn_grads("cpu", groups=groups)
        second = _dcn_grads("cpu", groups=groups)
    _assert_bitwise(first, second, "two runs")
    with deterministic(threads=1):
        single = _dcn_grads("cpu", groups=groups)
    # grad_input, grad_offset and grad_mask come from our own sampling passes only
    _assert_bitwise(first[:4], single[:4], "1 vs 2 threads")
    # grad_weight goes through the BLAS GEMM, whose blocking may depend on the thread count
    torch.testing.assert_close(first[4], single[4], rtol=1e-5, atol=1e-5)


def test_cpu_deform_conv_channel_chunks_match_reference_sum():
    """More channels than one chunk (kChannelChunk = 64) in each deformable group: the chunked
    sums of the coordinate gradients equal the float64 result to float32 rounding."""
    tensors, grad, kw = _dcn_case("cpu", c=160, dg=2, h=7, w=6)
    ours = modulated_deform_conv2d(*[t.clone().requires_grad_() for t in tensors], **kw)
    leaves32 = [t.clone().requires_grad_() for t in tensors]
    leaves64 = [t.double().requires_grad_() for t in tensors]
    modulated_deform_conv2d(*leaves32, **kw).backward(grad)
    modulated_deform_conv2d(*leaves64, **kw).backward(grad.double())
    assert ours.shape == (2, 16, 7, 6)
    for a, b in zip(leaves32, leaves64):
        scale = b.grad.abs().max().item()
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-5 * scale)


def test_cpu_roi_backward_bitwise_across_runs_and_threads():
    with deterministic(threads=2):
        first = _roi_grads("cpu")
        second = _roi_grads("cpu")
    with deterministic(threads=1):
        single = _roi_grads("cpu")
    _assert_bitwise(first, second, "two runs")
    _assert_bitwise(first, single, "1 vs 2 threads")


def _dcn_backend_grads(backend, tensors, grad, kw, dtype=None):
    """Output and the input, offset, (mask,) weight and bias gradients from `backend`'s forward
    and backward ops (tensors[2], the mask, may be None)."""
    x, offset, mask, weight, bias = [backend.to(t, dtype) for t in tensors]
    pad, dg, groups = kw["padding"], kw["deform_groups"], kw["groups"]
    params = (1, 1, pad, pad, 1, 1, groups, dg, 64)
    out = backend.ops.modulated_deform_conv2d(x, offset, mask, weight, bias, *params)
    grads = backend.ops._modulated_deform_conv2d_backward(
        backend.to(grad, dtype), x, offset, mask, weight, bias, *params
    )
    return [out] + [g for g, t in zip(grads, tensors) if t is not None]


def _roi_backend_grads(backend, dtype=None):
    """grad_input, grad_offset, grad_mask of the deformable RoI pooling and grad_input of
    RoIAlign for _roi_case, from `backend`'s backward ops (in `dtype`; rois stay float32)."""
    x, rois, offset, mask, grad = _roi_case("cpu")
    rois = backend.to(rois)
    x, offset, mask, grad = [backend.to(t, dtype) for t in (x, offset, mask, grad)]
    pool = backend.ops._modulated_deform_roi_pool_backward(
        grad, x, rois, offset, mask, 7, 7, 1 / 8, 2, 0.1
    )
    align = backend.ops._roi_align_backward(grad, rois, 1 / 8, 7, 7, *x.shape, 2, True)
    return list(pool) + [align]


def test_cuda_kernels_deform_conv_deterministic_bitwise_and_close_to_atomic(cuda_backend):
    tensors, grad, kw = _dcn_case("cpu")
    with deterministic():
        first = _dcn_backend_grads(cuda_backend, tensors, grad, kw)
        second = _dcn_backend_grads(cuda_backend, tensors, grad, kw)
    _assert_bitwise(first, second, "two deterministic runs")
    atomic = _dcn_backend_grads(cuda_backend, tensors, grad, kw)
    for a, b in zip(first, atomic):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    cpu = _dcn_grads("cpu")
    for a, b in zip(first, cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


def test_cuda_kernels_roi_deterministic_bitwise_and_close_to_atomic(cuda_backend):
    with deterministic():
        first = _roi_backend_grads(cuda_backend)
        second = _roi_backend_grads(cuda_backend)
    _assert_bitwise(first, second, "two deterministic runs")
    atomic = _roi_backend_grads(cuda_backend)
    cpu = _roi_grads("cpu")
    for a, b, c in zip(first, atomic, cpu):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_cuda_kernels_roi_deterministic_dtypes_bitwise(cuda_backend, dtype):
    """The deterministic RoI input-gradient kernel in the other dtypes: two runs bit-identical,
    and close to the atomic kernel's result."""
    with deterministic():
        first = _roi_backend_grads(cuda_backend, dtype)
        second = _roi_backend_grads(cuda_backend, dtype)
    _assert_bitwise(first, second, "two deterministic runs")
    atomic = _roi_backend_grads(cuda_backend, dtype)
    tol = {torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    for a, b in zip(first, atomic):
        assert a.dtype == dtype
        scale = b.abs().max().item() + 1
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * scale)


@pytest.mark.parametrize(
    "dtype, groups, modulated",
    [(torch.float32, 2, True), (torch.float64, 1, True), (torch.float16, 1, True),
     (torch.bfloat16, 1, False)],
)  # fmt: skip
def test_cuda_kernels_deform_conv_deterministic_variants_bitwise(
    cuda_backend, dtype, groups, modulated
):
    """The deterministic CUDA backward for conv groups, half types and DCNv1 (no mask): two runs
    bit-identical, and close to the CPU float32 result."""
    tensors, grad, kw = _dcn_case("cpu", groups=groups)
    if not modulated:
        tensors[2] = None

    def cpu_grads():
        # on the values the kernel sees (rounded to dtype): a rounded offset can move a sample
        # across a pixel boundary, where the offset gradient jumps
        leaves = [t.to(dtype).float().requires_grad_() if t is not None else None for t in tensors]
        out = modulated_deform_conv2d(*leaves, **kw)
        out.backward(grad.to(dtype).float())
        return [out.detach()] + [t.grad for t in leaves if t is not None]

    with deterministic():
        first = _dcn_backend_grads(cuda_backend, tensors, grad, kw, dtype)
        second = _dcn_backend_grads(cuda_backend, tensors, grad, kw, dtype)
    _assert_bitwise(first, second, "two deterministic runs")
    tol = {torch.float32: 1e-4, torch.float64: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}
    tol = tol[dtype]
    for a, b in zip(first, cpu_grads()):
        assert a.dtype == dtype
        scale = b.abs().max().item() + 1
        torch.testing.assert_close(a.float().cpu(), b, rtol=tol, atol=tol * scale)
