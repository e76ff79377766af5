"""A short text description of the software and hardware environment, logged at start-up."""

from __future__ import annotations

import platform
import sys

import numpy as np
import torch

import detection


def collect_env_info() -> str:
    """Python, torch, CUDA, GPUs, the compiled ops and key library versions, one per line."""
    lines = [
        f"python: {sys.version.split()[0]} ({platform.platform()})",
        f"torch: {torch.__version__} (CUDA build {torch.version.cuda})",
        f"numpy: {np.__version__}",
        f"CUDA available: {torch.cuda.is_available()}",
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)}")
    lines.append(f"detection._C loaded: {detection.HAS_OPS}")
    if detection.HAS_OPS:
        lines.append(f"detection._C with CUDA kernels: {detection.cuda_compiled()}")
    lines.append(f"CPU threads: {torch.get_num_threads()}")
    for name in ("torchvision", "pycocotools", "cv2", "yacs"):
        try:
            mod = __import__(name)
            lines.append(f"{name}: {getattr(mod, '__version__', 'unknown')}")
        except ImportError:
            lines.append(f"{name}: not installed")
    return "\n".join(lines)


if __name__ == "__main__":
    print(collect_env_info())
