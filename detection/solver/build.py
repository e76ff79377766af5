"""Optimizer and scheduler from the config: the only reader of the optimizer and schedule keys
(SOLVER.OPTIMIZER, BASE_LR, MOMENTUM, BETAS, WEIGHT_DECAY*, BIAS_LR_FACTOR, OFFSET_LR_FACTOR,
LR_SCHEDULER_NAME, BASE_LR_END, STEPS, GAMMA, WARMUP_*). The loop's keys (periods, AMP,
CLIP_GRAD_NORM, SKIP_NONFINITE_STEPS) are read by `TrainOptions.from_config` / `engine.amp`, the
batch size and MAX_ITER by `make_data_loader`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detection.config.validate import LR_SCHEDULERS, OPTIMIZERS
from detection.solver.lr_scheduler import WarmupCosineLR, WarmupMultiStepLR

# Substrings naming the offset/modulation predictors of deformable convs and RoI pooling.
OFFSET_PARAM_KEYS = ("conv_offset", "offset_fc", "mask_fc")
_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm2d,
    nn.LocalResponseNorm,
)


def _is_norm_module(module: nn.Module) -> bool:
    # FrozenBatchNorm-like modules hold buffers, not parameters, so they never reach here;
    # any other module whose class name says "Norm" is treated as a normalisation layer.
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float = 0.0,
    weight_decay_norm: float = 0.0,
    offset_lr_factor: float = 1.0,
) -> list[dict[str, Any]]:
    """One parameter group per trainable parameter, with its own lr and weight decay.

    Rules, in order: parameters of normalisation layers get `weight_decay_norm`; every bias
    (normalisation biases included, as in maskrcnn-benchmark and detectron2) then gets
    `base_lr * bias_lr_factor` and `weight_decay_bias`; parameters whose qualified name contains
    one of OFFSET_PARAM_KEYS additionally have their lr multiplied by `offset_lr_factor`. Frozen
    (requires_grad=False) and shared (seen twice) parameters are skipped. Each group records the
    parameter's qualified name under "name".
    """
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        is_norm = _is_norm_module(module)
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{pname}" if module_name else pname
            lr, wd = base_lr, weight_decay
            if is_norm:
                wd = weight_decay_norm
            if pname == "bias":
                lr, wd = base_lr * bias_lr_factor, weight_decay_bias
            if any(key in full for key in OFFSET_PARAM_KEYS):
                lr *= offset_lr_factor
            groups.append({"params": [param], "lr": lr, "weight_decay": wd, "name": full})
    return groups


# Devices with torch's fused optimizer kernels that this project trains on.
_FUSED_DEVICE_TYPES = ("cpu", "cuda")


def _fused_kernels_apply(groups: list[dict[str, Any]]) -> bool:
    """True when torch's fused SGD/AdamW kernels take every parameter: floating point, on the CPU
    or a CUDA device."""
    params = [p for g in groups for p in g["params"]]
    return all(p.is_floating_point() and p.device.type in _FUSED_DEVICE_TYPES for p in params)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER over `get_param_groups` from SOLVER.* (BASE_LR for IMS_PER_BATCH images):
    SGD with MOMENTUM (L2 weight decay, added to the gradient), or AdamW with BETAS (decay
    decoupled from the gradient, applied as `lr * weight_decay` per step).

    Both use torch's fused kernels where they apply (`fused=True`): one kernel per parameter
    instead of torch's default loop of 5-10 elementwise ops each. The update is the same up to
    float rounding (the kernels fuse multiply-adds) and so is the state dict: checkpoints of
    either kind load into the other, and a loaded state keeps this optimizer's choice. The model
    must be on its device before this is called."""
    s = cfg.SOLVER
    if s.BASE_LR <= 0:
        raise ValueError(f"SOLVER.BASE_LR must be > 0, got {s.BASE_LR}")
    groups = get_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        bias_lr_factor=s.BIAS_LR_FACTOR,
        weight_decay_bias=s.WEIGHT_DECAY_BIAS,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        offset_lr_factor=s.OFFSET_LR_FACTOR,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = _fused_kernels_apply(groups) or None  # None: torch's default implementation
    if s.OPTIMIZER == "SGD":
        opt = torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, fused=fused)
    elif s.OPTIMIZER == "AdamW":
        opt = torch.optim.AdamW(groups, lr=s.BASE_LR, betas=tuple(s.BETAS), fused=fused)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {s.OPTIMIZER!r}")
    opt.register_load_state_dict_pre_hook(_keep_fused_choice)
    return opt


def _keep_fused_choice(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict:
    """Load-state pre-hook: the loaded groups take this optimizer's `fused` (torch would otherwise
    copy the saved flag, so a checkpoint of the default loop would switch the kernels off, and a
    fused one would ask for them on a device without them)."""
    fused = optimizer.param_groups[0].get("fused")  # one choice for all groups
    state_dict = dict(state_dict)
    state_dict["param_groups"] = [{**g, "fused": fused} for g in state_dict["param_groups"]]
    return state_dict


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupMultiStepLR | WarmupCosineLR:
    """SOLVER.LR_SCHEDULER_NAME: WarmupMultiStepLR from SOLVER.STEPS/GAMMA/WARMUP_* (steps beyond
    MAX_ITER are allowed), or WarmupCosineLR from MAX_ITER/BASE_LR_END/WARMUP_*."""
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME == "WarmupCosineLR":
        return WarmupCosineLR(
            optimizer,
            max_iter=s.MAX_ITER,
            end_factor=s.BASE_LR_END / s.BASE_LR,
            warmup_factor=s.WARMUP_FACTOR,
            warmup_iters=s.WARMUP_ITERS,
            warmup_method=s.WARMUP_METHOD,
        )
    if s.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        raise ValueError(
            f"SOLVER.LR_SCHEDULER_NAME must be one of {LR_SCHEDULERS}, got {s.LR_SCHEDULER_NAME!r}"
        )
    return WarmupMultiStepLR(
        optimizer,
        milestones=s.STEPS,
        gamma=s.GAMMA,
        warmup_factor=s.WARMUP_FACTOR,
        warmup_iters=s.WARMUP_ITERS,
        warmup_method=s.WARMUP_METHOD,
    )
