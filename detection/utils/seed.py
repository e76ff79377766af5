"""Seeding and capturing/restoring the random number generators (python, numpy, torch, CUDA)."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_all(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all CUDA devices too).

    Args:
        seed: the seed; tools pass `cfg.SEED + rank` so ranks draw different samples.
        deterministic: also request deterministic torch algorithms (warn-only for ops without a
            deterministic implementation) and disable cuDNN benchmarking.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def get_rng_state() -> dict[str, Any]:
    """Snapshot of every RNG this process uses: {"python", "numpy", "torch", "cuda"}.

    "cuda" is a list of ByteTensors (one per visible GPU), or None without CUDA.
    """
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot from `get_rng_state` (the CUDA part only when it matches this machine)."""
    missing = {"python", "numpy", "torch"} - set(state)
    if missing:
        raise KeyError(f"rng state lacks {sorted(missing)}")
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
