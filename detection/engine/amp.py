"""Mixed precision: the autocast dtype that SOLVER.AMP asks for on a device."""

from __future__ import annotations

import logging

import torch

from detection.config.validate import AMP_DTYPES as AMP_DTYPE_NAMES

# SOLVER.AMP.DTYPE -> torch dtype (the names are checked once, by the config loader)
AMP_DTYPES = {name: getattr(torch, name) for name in AMP_DTYPE_NAMES}


def resolve_amp_dtype(
    cfg, device: torch.device, logger: logging.Logger | None = None
) -> torch.dtype | None:
    """The autocast dtype from SOLVER.AMP (None when disabled, or on CPU with a log line)."""
    amp = cfg.SOLVER.AMP
    if not amp.ENABLED:
        return None
    if device.type != "cuda":
        if logger is not None:
            logger.info(
                "SOLVER.AMP.ENABLED is set but the device is %s: mixed precision disabled", device
            )
        return None
    return AMP_DTYPES[amp.DTYPE]
