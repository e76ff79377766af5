"""Checkpoints: atomic writes, a `last_checkpoint` pointer, rotation, resume and weight loading.

A checkpoint is a dict with "model" (state dict), "optimizer", "scheduler", "iteration", "rng"
(this process's RNG states, see `detection.utils.seed`), "rng_all_ranks" (one per rank, when
distributed) and "cfg" (the config as a YAML string). Files are written to a temporary name in
the target folder, fsynced and renamed over the target with `os.replace`, so a crash leaves
either the old or the new file, never a truncated one; the pointer file is written the same way
and only after the checkpoint is in place. A SIGKILL in the middle of a write leaves a stray
`.<name>.*.tmp` file, which `remove_stale_temp_files` clears at the next start.
"""

from __future__ import annotations

from collections import OrderedDict
import glob
import logging
import os
import re
import tempfile
from typing import Any, Callable

import torch
from torch import nn
import yaml

from detection.engine.checkpoint_paths import read_checkpoint
from detection.modeling.meta_arch.state_dict import upgrade_state_dict
from detection.utils.cli import UsageError

POINTER_NAME = "last_checkpoint"
_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel/DataParallel wrappers (or `model` itself)."""
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write_fn: Callable[[Any], None], binary: bool = True) -> None:
    """Write `path` atomically: `write_fn(file)` fills a temporary file in the same folder, which
    is flushed, fsynced and renamed over `path`. On any error the temporary file is removed and
    `path` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def strip_prefix(state_dict: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Drop `prefix` from every key when all keys carry it (weights saved from a DDP wrapper)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return OrderedDict((k[len(prefix) :], v) for k, v in state_dict.items())
    return state_dict


class CheckpointMismatchError(UsageError):
    """The weights in a checkpoint do not fit the model being built (another architecture)."""


def remove_stale_temp_files(folder: str) -> list[str]:
    """Delete the `.<name>.*.tmp` files an interrupted `atomic_write` left in `folder`.

    Only call it when no other process writes to `folder` (rank 0, before training)."""
    stale = glob.glob(os.path.join(glob.escape(folder), ".*.tmp"))
    for path in stale:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return stale


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(saved_yaml: str, current_yaml: str, section: str = "MODEL") -> list[str]:
    """`KEY: saved -> current` for every key under `section` that differs between two configs
    given as YAML strings (the "cfg" entry of a checkpoint and `cfg.dump()`)."""
    try:
        saved = _flatten(yaml.safe_load(saved_yaml) or {})
        current = _flatten(yaml.safe_load(current_yaml) or {})
    except yaml.YAMLError:
        return []
    keys = sorted(k for k in set(saved) | set(current) if k.startswith(section + "."))
    return [
        f"{k}: {saved.get(k, '<absent>')!r} in the checkpoint, {current.get(k, '<absent>')!r} now"
        for k in keys
        if saved.get(k) != current.get(k) and k not in ("MODEL.WEIGHT", "MODEL.DEVICE")
    ]


def check_state_dict_compatible(
    model: nn.Module, state_dict: dict[str, Any], source: str, hint: str = ""
) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected and shape-mismatched key
    between `model.state_dict()` and `state_dict` (loaded from `source`); `hint` is appended."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if isinstance(state_dict[k], torch.Tensor)
        and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    if own and not set(own) & set(state_dict):
        raise CheckpointMismatchError(
            f"{source} is not a checkpoint of this detector (none of its {len(state_dict)} "
            "weights is one of the model's): give a checkpoint written by tools/train.py"
        )

    def _fmt(title: str, items: list[str]) -> str:
        shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
        return f"\n  {title} ({len(items)}): " + ", ".join(shown) if items else ""

    raise CheckpointMismatchError(
        f"weights in {source} do not match the model architecture "
        f"(is MODEL.WEIGHT / --ckpt from a different config?)"
        + _fmt("missing in checkpoint", missing)
        + _fmt("unexpected in checkpoint", unexpected)
        + _fmt("shape mismatch", mismatched)
        + hint
    )


class Checkpointer:
    """Saves and restores model/optimizer/scheduler state in `save_dir`.

    Args:
        model: the model (a DDP wrapper is unwrapped).
        optimizer, scheduler: saved and restored when given.
        save_dir: folder of the periodic checkpoints and of the `last_checkpoint` pointer.
        keep: how many periodic checkpoints `save(..., rotate=True)` keeps (0 = all).
        save_to_disk: False on ranks other than 0 (they never write).
        logger: where to log; defaults to "detection.checkpointer".
        cfg_yaml: the current config (`cfg.dump()`); when given, a load compares it with the
            checkpoint's "cfg": a weight mismatch lists the differing MODEL.* keys, and a load
            that fits despite such differences logs them as a warning.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        save_dir: str = "",
        keep: int = 0,
        save_to_disk: bool = True,
        logger: logging.Logger | None = None,
        cfg_yaml: str = "",
    ) -> None:
        self.cfg_yaml = cfg_yaml
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = save_dir
        self.keep = keep
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger("detection.checkpointer")

    # ----------------------------------------------------------------------------- saving
    def state(self, **extra: Any) -> dict[str, Any]:
        """The checkpoint dict: "model", "optimizer", "scheduler" plus `extra` entries."""
        data: dict[str, Any] = {"model": unwrap_model(self.model).state_dict()}
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        data.update(extra)
        return data

    def save(
        self,
        name: str,
        folder: str | None = None,
        rotate: bool = True,
        update_pointer: bool = True,
        **extra: Any,
    ) -> str | None:
        """Write `<folder or save_dir>/<name>.pth` atomically; returns its path (None off rank 0).

        `extra` goes into the checkpoint (iteration=..., rng=..., cfg=...). With `update_pointer`
        the `last_checkpoint` file of that folder then names it; with `rotate`, periodic
        checkpoints (`model_<digits>.pth`) beyond the newest `keep` are removed afterwards.
        """
        if not self.save_to_disk:
            return None
        folder = folder or self.save_dir
        if not folder:
            raise ValueError("Checkpointer.save needs a folder (save_dir is empty)")
        path = os.path.join(folder, f"{name}.pth")
        data = self.state(**extra)
        atomic_write(path, lambda f: torch.save(data, f))
        if update_pointer:
            atomic_write(
                os.path.join(folder, POINTER_NAME),
                lambda f: f.write(os.path.basename(path) + "\n"),
                binary=False,
            )
        self.logger.info("Saved checkpoint %s", path)
        if rotate and self.keep > 0:
            self._rotate(folder, keep_path=path)
        return path

    def _rotate(self, folder: str, keep_path: str) -> None:
        pattern = re.compile(r"model_(\d+)\.pth$")
        periodic = sorted(
            (p for p in glob.glob(os.path.join(folder, "model_*.pth")) if pattern.search(p)),
            key=lambda p: int(pattern.search(p).group(1)),
        )
        for old in periodic[: max(len(periodic) - self.keep, 0)]:
            if os.path.abspath(old) != os.path.abspath(keep_path):
                os.remove(old)
                self.logger.info("Removed old checkpoint %s", old)

    # ---------------------------------------------------------------------------- loading
    def get_checkpoint_file(self, folder: str | None = None) -> str | None:
        """The checkpoint the `last_checkpoint` pointer names, or None without a valid pointer."""
        folder = folder or self.save_dir
        pointer = os.path.join(folder, POINTER_NAME)
        if not os.path.isfile(pointer):
            return None
        with open(pointer) as f:
            name = f.read().strip()
        path = name if os.path.isabs(name) else os.path.join(folder, name)
        return path if name and os.path.isfile(path) else None

    def has_checkpoint(self, folder: str | None = None) -> bool:
        return self.get_checkpoint_file(folder) is not None

    def load(self, path: str, resume: bool = False) -> dict[str, Any]:
        """Load weights from `path` (a checkpoint dict or a bare state dict).

        With `resume` the optimizer and scheduler states are restored too (they must be in the
        file). The model must match exactly; otherwise a CheckpointMismatchError (a ValueError)
        names the mismatched keys and, with `cfg_yaml`, the differing MODEL.* config keys.
        Returns the remaining entries of the checkpoint ("iteration", "rng", "cfg", ...).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        data = read_checkpoint(path)
        if not isinstance(data, dict):
            raise UsageError(
                f"{path} holds a {type(data).__name__}, not a checkpoint or state dict"
            )
        is_checkpoint = "model" in data and isinstance(data["model"], dict)
        # keys of older checkpoints are renamed in one place (`modeling/meta_arch/state_dict.py`)
        state_dict = upgrade_state_dict(strip_prefix(data["model"] if is_checkpoint else data))
        model = unwrap_model(self.model)
        diffs = []
        if is_checkpoint and self.cfg_yaml and isinstance(data.get("cfg"), str):
            diffs = config_differences(data["cfg"], self.cfg_yaml)
        hint = (
            "\n  the checkpoint was trained with a different model config:\n    "
            + "\n    ".join(diffs)
            if diffs
            else ""
        )
        check_state_dict_compatible(model, state_dict, path, hint=hint)
        if diffs:
            self.logger.warning(
                "%s fits the model, but its config differs:\n  %s", path, "\n  ".join(diffs)
            )
        model.load_state_dict(state_dict)
        self.logger.info("Loaded model weights from %s", path)
        rest = {k: v for k, v in data.items() if k != "model"} if is_checkpoint else {}
        if resume:
            for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
                if obj is None:
                    continue
                if key not in rest:
                    raise ValueError(f"cannot resume from {path}: it has no {key} state")
                obj.load_state_dict(rest.pop(key))
        else:
            rest.pop("optimizer", None)
            rest.pop("scheduler", None)
        return rest
