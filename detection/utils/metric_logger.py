"""Smoothed training metrics: windowed median and global average per named value."""

from __future__ import annotations

from collections import defaultdict, deque

import torch


class SmoothedValue:
    """A series of floats with a windowed median/average and a global average.

    Args:
        window_size: how many of the latest values `median` and `avg` look at.
    """

    def __init__(self, window_size: int = 20) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.deque: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.deque.append(float(value))
        self.count += 1
        self.total += float(value)

    @property
    def latest(self) -> float:
        return self.deque[-1]

    @property
    def median(self) -> float:
        return float(torch.tensor(list(self.deque), dtype=torch.float64).median().item())

    @property
    def avg(self) -> float:
        return sum(self.deque) / len(self.deque)

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)


class MetricLogger:
    """Named SmoothedValues; `str()` gives `name: median (global_avg)` for each one."""

    def __init__(self, delimiter: str = "  ", window_size: int = 20) -> None:
        self.meters: dict[str, SmoothedValue] = defaultdict(lambda: SmoothedValue(window_size))
        self.delimiter = delimiter

    def update(self, **kwargs: float | torch.Tensor) -> None:
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if not isinstance(value, (float, int)):
                raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
            self.meters[name].update(value)

    def __getattr__(self, attr: str) -> SmoothedValue:
        meters = self.__dict__.get("meters")
        if meters is not None and attr in meters:
            return meters[attr]
        raise AttributeError(f"{type(self).__name__} has no attribute {attr!r}")

    def __str__(self) -> str:
        return self.delimiter.join(
            f"{name}: {meter.median:.4f} ({meter.global_avg:.4f})"
            for name, meter in self.meters.items()
        )
