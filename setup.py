"""Build `detection` and its compiled ops library `detection._C`.

The C++ CPU kernels are always compiled. The CUDA kernels are compiled when a CUDA toolkit is
found and either a GPU is visible or `FORCE_CUDA=1` is set; `TORCH_CUDA_ARCH_LIST` picks the
architectures (default below). Install with `pip install --no-build-isolation -e .` so that the
build uses the torch already installed instead of pulling another one (`pyproject.toml` declares
the build requirements; pip >= 21.3 makes the editable install through PEP 660).

Object files go to a persistent `build/temp.*` folder, for `setup.py build_ext --inplace` and for
the editable install alike (setuptools would otherwise give the latter a new temporary folder each
time): ninja then recompiles only the sources whose text, headers or flags changed.

With `DETECTION_CUDA_EMULATION=1` a second, test-only library `detection._C_cuda_emu` is built:
the same CUDA kernel sources compiled by the host C++ compiler against an emulation of the CUDA
runtime (csrc/cuda_emu/), registering `torch.ops.detection_cuda_emu.<op>` for CPU tensors, so the
CUDA code runs in the CPU test suite. `DETECTION_CUDA_COVERAGE=1` builds that library alone,
instrumented for gcov (tools/cuda_emu_coverage.sh).
"""

import glob
import os
import sys
import sysconfig

from setuptools import find_packages, setup

# torch finds the CUDA toolkit from `nvcc` on PATH; where that is a wrapper script outside the
# toolkit (as on our machines), point it at the standard location before torch looks.
if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


class _BuildExtension(BuildExtension):
    """torch's BuildExtension (ninja) with a persistent object folder under build/."""

    def finalize_options(self) -> None:
        super().finalize_options()
        tag = f"temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
        self.build_temp = os.path.join(ROOT, "build", tag)


def _headers(csrc: str) -> list:
    """Every header under csrc/: a changed header relinks (ninja recompiles what includes it)."""
    return sorted(
        os.path.relpath(p, ROOT)
        for ext in ("h", "hpp", "cuh", "inc")
        for p in glob.glob(os.path.join(csrc, "**", f"*.{ext}"), recursive=True)
    )


def _want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if CUDA_HOME is None:
        if force:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: install nvcc or set CUDA_HOME.")
        return False
    if torch.version.cuda is None:
        if force:
            sys.exit(
                "FORCE_CUDA=1 but this torch is a CPU-only build: install the CUDA-enabled torch."
            )
        return False
    return force or torch.cuda.is_available()


def _nvidia_pip_include_dirs() -> list:
    """Headers of the pip `nvidia-*` packages (cuBLAS, cuSPARSE, ... that torch's CUDA headers
    include); a system CUDA toolkit may lack them."""
    try:
        import nvidia  # namespace package installed with the CUDA-enabled torch
    except ImportError:
        return []
    dirs = []
    for base in nvidia.__path__:
        dirs += glob.glob(os.path.join(base, "*", "include"))
    return sorted(d for d in dirs if os.path.isdir(d))


def _extension():
    csrc = os.path.join(ROOT, "csrc")
    emu = os.path.join(csrc, "cuda_emu", "")
    cpp = sorted(
        p
        for p in glob.glob(os.path.join(csrc, "**", "*.cpp"), recursive=True)
        if not p.startswith(emu)
    )
    cu = sorted(glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True))
    cxx_flags = ["-O3", "-fopenmp"]
    # at::parallel_for is inlined from ATen/ParallelOpenMP.h: without -fopenmp it runs serially.
    # The OpenMP runtime resolves to the libgomp.so.1 torch has already loaded.
    link_flags = ["-fopenmp"]
    kwargs = dict(
        include_dirs=[csrc],
        extra_link_args=link_flags,
        depends=_headers(csrc),
    )
    sources = [os.path.relpath(p, ROOT) for p in cpp]
    if _want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        sources += [os.path.relpath(p, ROOT) for p in cu]
        kwargs["include_dirs"] += _nvidia_pip_include_dirs()
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        nvcc_flags += ["--threads", os.environ.get("NVCC_THREADS", "2")]
        print(
            f"detection: building CPU and CUDA kernels ({len(cu)} .cu files) for "
            f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} with CUDA_HOME={CUDA_HOME}"
        )
        return CUDAExtension(
            "detection._C",
            sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            **kwargs,
        )
    print("detection: building CPU kernels only (set FORCE_CUDA=1 to compile the CUDA kernels)")
    return CppExtension("detection._C", sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)


def _cuda_emulation_extension():
    """The test-only CUDA emulation library (module docstring), or None when not asked for."""
    if os.environ.get("DETECTION_CUDA_EMULATION", "0") != "1":
        return None
    csrc = os.path.join(ROOT, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "cuda_emu", "*.cpp")))
    cu = sorted(glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True))  # included by sources
    cxx_flags = ["-DDETECTION_CUDA_EMULATION", "-fvisibility=hidden"]
    link_flags = []
    if os.environ.get("DETECTION_CUDA_COVERAGE", "0") == "1":
        cxx_flags += ["-O0", "--coverage"]
        link_flags += ["--coverage"]
    else:
        cxx_flags += ["-O1"]
    print(f"detection: building the CUDA emulation library ({len(sources)} sources)")
    return CppExtension(
        "detection._C_cuda_emu",
        [os.path.relpath(p, ROOT) for p in sources],
        include_dirs=[csrc],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        depends=_headers(csrc) + [os.path.relpath(p, ROOT) for p in cu],
    )


def _extensions():
    emu = _cuda_emulation_extension()
    if emu is not None and os.environ.get("DETECTION_CUDA_COVERAGE", "0") == "1":
        return [emu]
    return [_extension()] + ([emu] if emu is not None else [])


setup(
    name="detection",
    version="0.1.0",
    description="Mask R-CNN with Deformable ConvNets v2: ops, model, training and evaluation",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "tools", "benchmarks")),
    python_requires=">=3.10",
    # `pip install --no-build-isolation -e .[deploy]`: what exporting to ONNX and running the
    # exported model need (tools/export.py, docs/deployment.md); training needs none of it.
    extras_require={
        "deploy": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18", "openvino>=2024.0"],
        # `.[bench]`: the benchmarks' optional baselines (benchmarks/bench_demo_ops.py: our DCN
        # forward against onnxruntime's DeformConv)
        "bench": ["onnx>=1.16", "onnxruntime>=1.18"],
    },
    ext_modules=_extensions(),
    cmdclass={"build_ext": _BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
