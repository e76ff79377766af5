"""detection: Mask R-CNN with Deformable ConvNets v2 on PyTorch."""

from detection._ext import HAS_OPS, cuda_compiled, require_ops

__version__ = "0.1.0"
__all__ = ["HAS_OPS", "cuda_compiled", "require_ops", "__version__"]
