"""From what a user names on the command line (`--ckpt`, `MODEL.WEIGHT`) to a loaded checkpoint.

`resolve_checkpoint` accepts a checkpoint file, the `last_checkpoint` pointer file (followed), or
a folder: a `model/` folder (its pointer), a `final/` folder (its model_final.pth) or a whole
WORKSPACE (final/model_final.pth, else model/last_checkpoint). `read_checkpoint` loads it and
turns "not a checkpoint at all" into a UsageError naming the file. Both raise errors whose text
names the flag and the file and says what to give instead.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from detection.utils.cli import MissingInputError, UsageError

POINTER_NAME = "last_checkpoint"
FINAL_NAME = "model_final.pth"
_WHAT = "a .pth checkpoint, its folder or a WORKSPACE"
_MAX_POINTER_BYTES = 4096


def _follow_pointer(pointer: str) -> str | None:
    """The file a `last_checkpoint` pointer names, or None when `pointer` is not such a file."""
    if os.path.getsize(pointer) > _MAX_POINTER_BYTES:
        return None
    with open(pointer, "rb") as f:
        raw = f.read()
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not name or "\n" in name:
        return None
    return name if os.path.isabs(name) else os.path.join(os.path.dirname(pointer), name)


def _in_folder(folder: str) -> str | None:
    for candidate in (
        os.path.join(folder, POINTER_NAME),
        os.path.join(folder, FINAL_NAME),
        os.path.join(folder, "final", FINAL_NAME),
        os.path.join(folder, "model", POINTER_NAME),
    ):
        if os.path.isfile(candidate):
            return candidate
    return None


def resolve_checkpoint(path: str, flag: str = "--ckpt") -> str:
    """The checkpoint file `path` stands for (see the module docstring).

    Raises MissingInputError when nothing is there and UsageError for a folder without a
    checkpoint or a pointer to a missing file."""
    if not path:
        raise UsageError(f"{flag} is empty: give {_WHAT}")
    if not os.path.exists(path):
        raise MissingInputError(f"{flag}: no such file or folder {path}: give {_WHAT}")
    if os.path.isdir(path):
        found = _in_folder(path)
        if found is None:
            raise UsageError(
                f"{flag}: no checkpoint in folder {path} (no last_checkpoint, {FINAL_NAME}, "
                f"final/ or model/): give {_WHAT}"
            )
        path = found
    if os.path.basename(path) == POINTER_NAME or _looks_like_text(path):
        target = _follow_pointer(path)
        if target is None:
            raise UsageError(
                f"{flag}: {path} is neither a checkpoint nor a last_checkpoint pointer"
            )
        if not os.path.isfile(target):
            raise UsageError(
                f"{flag}: {path} points to {target}, which does not exist "
                "(deleted or moved?): give the checkpoint file itself"
            )
        return target
    return path


def _looks_like_text(path: str) -> bool:
    """True for a small file that is not a torch zip archive nor a pickle (a pointer)."""
    if os.path.getsize(path) > _MAX_POINTER_BYTES:
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80")


def read_checkpoint(path: str, flag: str = "--ckpt") -> Any:
    """`torch.load(path)` on the CPU; a file torch cannot read raises UsageError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except MemoryError:
        raise
    except Exception as exc:  # UnpicklingError, a bad zip (RuntimeError, OSError), EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"{flag}: {path} is not a readable checkpoint ({first[:160]}): give a .pth file "
            "written by tools/train.py"
        ) from None
