"""Command-line error handling shared by every tool in tools/.

A mistake a user can fix (a bad flag, a missing or corrupt file, a checkpoint of another kind)
ends a tool with exit status 2 and one line on stderr, `error: <what, naming the file or flag>:
<what to do>`, never a traceback. Tools build their parser with `ArgumentParser` (its errors
become that line too) and wrap `main` with `@cli_main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import functools
import json
import sys
from typing import NoReturn

from detection._ext import OpsNotBuiltError

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input the user can fix; the message names the file or flag and says what to do."""


class MissingInputError(UsageError, FileNotFoundError):
    """A file or folder named on the command line (or in the config) does not exist."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors raise UsageError (one `error:` line) instead of printing
    the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# Bad input rather than a bug: ConfigError and CheckpointMismatchError are UsageErrors too; a
# missing or stale build of the ops is the user's to fix too (its message says how).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    OpsNotBuiltError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    json.JSONDecodeError,
)


def error_line(exc: BaseException) -> str:
    """`error: ...` for `exc`: its message, first line first (details follow on later lines)."""
    text = str(exc).strip() or type(exc).__name__
    return f"error: {text}"


def cli_main(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's `main(argv=None) -> int`: a user error prints `error_line` to stderr and
    returns EXIT_USAGE; anything else propagates (a bug keeps its traceback)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as exc:
            print(error_line(exc), file=sys.stderr, flush=True)
            return EXIT_USAGE

    return wrapper


def run_tool(main: Callable[..., object], argv: list[str] | None = None) -> int:
    """For a tool whose `main` returns something other than an exit status: 0 when it returns,
    EXIT_USAGE with one `error:` line on a user error."""
    status = cli_main(main)(argv)
    return status if isinstance(status, int) else 0
