"""Never lose a run: a fresh training (no `--resume`) refuses a WORKSPACE that holds another run's
checkpoints, unless told to start over (`--overwrite`), which then removes them first so that the
new run's rotation and `last_checkpoint` pointer never mix with the old run's files."""

from __future__ import annotations

import glob
import logging
import os

from detection.utils.cli import UsageError

POINTER_NAME = "last_checkpoint"


def earlier_run_files(workspace: str) -> list[str]:
    """The checkpoints (and pointer) of a run in `workspace`: model/*.pth, model/last_checkpoint,
    save/*.pth and final/model_final.pth, sorted."""
    ws = glob.escape(workspace)
    found = glob.glob(os.path.join(ws, "model", "*.pth"))
    found += glob.glob(os.path.join(ws, "save", "*.pth"))
    for name in (os.path.join("model", POINTER_NAME), os.path.join("final", "model_final.pth")):
        if os.path.isfile(os.path.join(workspace, name)):
            found.append(os.path.join(workspace, name))
    return sorted(found)


def guard_fresh_run(
    workspace: str, overwrite: bool, is_main: bool = True, logger: logging.Logger | None = None
) -> None:
    """Call before a training without `--resume`.

    Without `overwrite`, raise UsageError when `workspace` holds another run's checkpoints. With
    it, the main process deletes them (logging each); other processes do nothing."""
    found = earlier_run_files(workspace)
    if not found:
        return
    if not overwrite:
        newest = max(found, key=os.path.getmtime)
        raise UsageError(
            f"WORKSPACE {workspace} holds another run's checkpoints ({len(found)} files, newest "
            f"{os.path.relpath(newest, workspace)}): continue it with --resume, give another "
            "WORKSPACE, or pass --overwrite to delete them and start from iteration 0"
        )
    if not is_main:
        return
    for path in found:
        os.remove(path)
        if logger is not None:
            logger.info("--overwrite: removed %s", path)
