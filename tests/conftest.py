"""Shared test set-up: CUDA tests skip without a GPU, the CUDA backends the CUDA kernel tests run
on (`cuda_backend`), and every test starts from a fixed seed."""

import dataclasses
import glob
import os

import pytest
import torch

# cuBLAS is deterministic only with a fixed workspace; some torch versions raise under
# torch.use_deterministic_algorithms(True) without it (the deterministic-mode CUDA tests). Read
# when the first cuBLAS handle is made, so setting it before any test runs is enough.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@dataclasses.dataclass(frozen=True)
class CudaBackend:
    """Where a CUDA kernel test runs the CUDA code of the ops.

    ``cuda``: the real GPU, ``torch.ops.detection`` on CUDA tensors. ``cuda_emu``: the CUDA
    emulation library ``detection._C_cuda_emu`` (the same ``.cu`` sources compiled for the host,
    every block and thread of every launch run on the CPU; built with
    ``DETECTION_CUDA_EMULATION=1``), ``torch.ops.detection_cuda_emu`` on CPU tensors, with the
    schemas of ``torch.ops.detection``."""

    name: str
    device: torch.device
    ops: object  # the torch.ops namespace of the op library

    def to(self, tensor, dtype=None):
        """``tensor`` on this backend's device (in ``dtype``); None stays None."""
        return None if tensor is None else tensor.to(self.device, dtype)


def _cuda_emu_backend() -> CudaBackend:
    from detection import _ext  # noqa: F401  (loads detection._C: the CPU kernels)

    if not hasattr(torch.ops, "detection_cuda_emu") or not hasattr(
        torch.ops.detection_cuda_emu, "nms"
    ):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        libs = sorted(glob.glob(os.path.join(root, "detection", "_C_cuda_emu*.so")))
        if not libs:
            message = (
                "the CUDA emulation library detection._C_cuda_emu is not built: build it with "
                "DETECTION_CUDA_EMULATION=1 python setup.py build_ext --inplace"
            )
            if os.environ.get("DETECTION_CUDA_EMULATION") == "1":
                pytest.fail(message + " (DETECTION_CUDA_EMULATION=1 is set)")
            pytest.skip(message)
        torch.ops.load_library(libs[0])
    return CudaBackend("cuda_emu", torch.device("cpu"), torch.ops.detection_cuda_emu)


def cuda_backends():
    """The CUDA backends as pytest parameters: the real GPU (marked `cuda`, skipped without one)
    and the CUDA emulation (marked `cuda_emu`), as torchvision's `cpu_and_cuda()`."""
    return (
        pytest.param("cuda", marks=pytest.mark.cuda, id="cuda"),
        pytest.param("cuda_emu", marks=pytest.mark.cuda_emu, id="cuda_emu"),
    )


@pytest.fixture(params=cuda_backends())
def cuda_backend(request) -> CudaBackend:
    """Each CUDA backend at hand in turn (see `cuda_backends`)."""
    if request.param == "cuda_emu":
        return _cuda_emu_backend()
    from detection import _ext

    assert _ext.cuda_compiled(), "the library was built without its CUDA kernels"
    return CudaBackend("cuda", torch.device("cuda"), torch.ops.detection)


@pytest.fixture
def cuda_emu_backend() -> CudaBackend:
    """The CUDA emulation backend alone (tests of the emulator itself)."""
    return _cuda_emu_backend()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
