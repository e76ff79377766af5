"""detection: Mask R-CNN with Deformable ConvNets v2 on PyTorch."""

from detection._threads import apply_openmp_defaults

apply_openmp_defaults()  # before torch loads (detection._ext imports it)

from detection._ext import HAS_OPS, cuda_compiled, require_ops  # noqa: E402

__version__ = "0.1.0"
__all__ = ["HAS_OPS", "cuda_compiled", "require_ops", "__version__"]
