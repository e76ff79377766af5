"""Logging set-up: console on rank 0, plus an optional text log file."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logger(
    name: str = "detection",
    save_dir: str = "",
    distributed_rank: int = 0,
    filename: str = "log.txt",
) -> logging.Logger:
    """Configure and return logger `name`.

    Rank 0 logs INFO to stdout and, when `save_dir` is given, appends to `save_dir/filename`;
    other ranks log WARNING and above only, to stderr. Calling it again replaces the handlers.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt="%H:%M:%S")
    if distributed_rank > 0:
        handler = logging.StreamHandler(stream=sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        return logger
    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(logging.INFO)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(save_dir, filename))
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(formatter)
        logger.addHandler(fh)
    return logger
