"""Loading of the compiled ops library `detection._C`.

The library registers the `torch.ops.detection.*` operators with the dispatcher. `import
detection` works without it; using an op then raises one error saying how to build it.
"""

import glob
import os

import torch

BUILD_HINT = (
    "detection's compiled ops (detection._C) are not built or failed to load{detail}. Build them "
    "from the repository root with `pip install --no-build-isolation -e .` (or `make build`; "
    "add FORCE_CUDA=1 to compile the CUDA kernels without a visible GPU)."
)


# The ops whose autograd the library registers itself (csrc/<op>/<op>_autograd.cpp, since
# 2026-12-06; Python registered it before): a library built from older sources has none for them,
# and training through its ops would silently give their inputs no gradient.
_AUTOGRAD_OPS = ("modulated_deform_conv2d", "modulated_deform_roi_pool", "roi_align")


def _load():
    here = os.path.dirname(os.path.abspath(__file__))
    # `_C.<tag>.so`, never the test-only CUDA emulation library `_C_cuda_emu.<tag>.so`
    patterns = ("_C.so", "_C.*.so", "_C.pyd", "_C.*.pyd")
    candidates = sorted(p for pat in patterns for p in glob.glob(os.path.join(here, pat)))
    if not candidates:
        return False, ""
    try:
        torch.ops.load_library(candidates[0])
    except OSError as exc:  # e.g. built against another torch
        return False, f": {exc}"
    stale = _stale_detail(candidates[0])
    return not stale, stale


def _stale_detail(library: str) -> str:
    """'' where the loaded library registers the autograd of every op of `_AUTOGRAD_OPS`, else
    the part of the load error that names `library` and the ops without it."""
    stale = [
        op
        for op in _AUTOGRAD_OPS
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"detection::{op}", "Autograd")
    ]
    if not stale:
        return ""
    return (
        f": {os.path.basename(library)} was built from older sources (no autograd kernel for "
        f"{', '.join(stale)}); rebuild it"
    )


HAS_OPS, _LOAD_ERROR = _load()


class OpsNotBuiltError(RuntimeError):
    """The compiled ops library is missing, failed to load, or was built from older sources; the
    message says how to build it (the tools print it as one `error:` line, exit 2)."""


def require_ops() -> None:
    """Raise OpsNotBuiltError (a RuntimeError) with build instructions when the compiled ops are
    missing or stale."""
    if not HAS_OPS:
        raise OpsNotBuiltError(BUILD_HINT.format(detail=_LOAD_ERROR))


def cuda_compiled() -> bool:
    """Whether the library was compiled with its CUDA kernels."""
    return HAS_OPS and torch.ops.detection._cuda_version() > 0


def cpu_isa() -> str:
    """Instruction-set variant the CPU kernels' sampling loops run with in this process:
    ``"avx512"``, ``"avx2"`` or ``"default"``. It follows ATen's pick
    (``torch.backends.cpu.get_cpu_capability()``; ``ATEN_CPU_CAPABILITY=default`` forces the
    baseline loops) and what the CPU supports."""
    require_ops()
    return torch.ops.detection._cpu_isa()


def cpu_backward_gemm() -> str:
    """Library that multiplies the CPU deformable conv's backward GEMMs (one conv group) in this
    process: ``"blas"`` (``at::mm``: MKL on x86-64) or ``"onednn"`` (a 1x1 convolution backward),
    whichever is faster on this CPU: oneDNN where the CPU has AVX-512 and is not Intel's (MKL
    runs its AVX2 kernels there), BLAS elsewhere; or the one ``set_cpu_backward_gemm`` forced.
    Grouped convs always use oneDNN."""
    require_ops()
    return torch.ops.detection._cpu_backward_gemm()


def cpu_weight_grad_gemm(weight_grad_bytes: int) -> str:
    """Library of the weight gradient's GEMM for a layer whose weight gradient takes
    ``weight_grad_bytes`` (one conv group): that of ``cpu_backward_gemm()``, except that where it
    is ``"onednn"`` a gradient over 1 MiB goes to ``"blas"`` (oneDNN's backward-by-weights falls
    behind MKL's sgemm once the gradient outgrows an L2 cache)."""
    require_ops()
    return torch.ops.detection._cpu_weight_grad_gemm(weight_grad_bytes)


def set_cpu_backward_gemm(name: str | None) -> None:
    """Force the library of the CPU deformable conv's backward GEMMs for this process
    (``"blas"`` or ``"onednn"``), or restore this CPU's pick (``None``). For benchmarks and
    tests: the two give the same gradients up to float rounding."""
    require_ops()
    torch.ops.detection._cpu_set_backward_gemm("auto" if name is None else name)


def cpu_fused_forward() -> bool:
    """Whether the CPU deformable conv's forward runs fused in this process: sampling and GEMM in
    one pass over blocks of output positions, in our own AVX2 / AVX-512 kernel, with no column
    tile and no oneDNN call. Where the AVX2 or AVX-512 loops run (``cpu_isa()`` is ``"avx2"`` or
    ``"avx512"``) and ``set_cpu_fused_forward(False)`` did not turn it off; then for float32
    layers of one conv group whose output channels and channels per deformable group are
    multiples of 16 and whose weight takes at most 1 MiB (the shapes demo's layers, ResNet-50's
    res3), with AVX2 only up to 64 output channels. Other layers take the column tiles and
    oneDNN's GEMM."""
    require_ops()
    return torch.ops.detection._cpu_fused_forward()


def set_cpu_fused_forward(enabled: bool) -> None:
    """Turn the fused forward off (``False``) or back on where the CPU runs it (``True``) for
    this process. For benchmarks and tests: the two forwards give the same output up to float
    rounding."""
    require_ops()
    torch.ops.detection._cpu_set_fused_forward(bool(enabled))


def cpu_workspace_bytes(release: bool = False) -> int:
    """Bytes of scratch the CPU kernels keep for the calling thread between calls (the
    deformable convolution's padded images, sampling plan and column tiles: reusing them spares
    a page fault per 4 KiB on every call); ``release=True`` frees them (returns what was held).
    Other threads' scratch is not touched."""
    require_ops()
    return torch.ops.detection._cpu_workspace(release)
