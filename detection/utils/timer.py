"""A simple wall-clock timer averaging over `tic`/`toc` pairs."""

from __future__ import annotations

import datetime
import time


class Timer:
    """Accumulates the durations between `tic()` and `toc()` calls."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total_time = 0.0
        self.calls = 0
        self.start_time = 0.0
        self.diff = 0.0

    def tic(self) -> None:
        self.start_time = time.perf_counter()

    def toc(self, average: bool = True) -> float:
        """Stop the running interval; returns the average (or the last) duration in seconds."""
        self.diff = time.perf_counter() - self.start_time
        self.total_time += self.diff
        self.calls += 1
        return self.average_time if average else self.diff

    @property
    def average_time(self) -> float:
        return self.total_time / self.calls if self.calls else 0.0

    def avg_time_str(self) -> str:
        return str(datetime.timedelta(seconds=round(self.average_time)))


def format_seconds(seconds: float) -> str:
    """`H:MM:SS` for a duration in seconds."""
    return str(datetime.timedelta(seconds=int(round(seconds))))
