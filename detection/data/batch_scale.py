"""Batch-level rescaling of training batches (`INPUT.BATCH_SCALES_TRAIN`): the whole batch of an
iteration is scaled by one factor after the per-image `Resize`, so that its padded size, hence
the cost of the iteration, follows the factor.

A per-image random size (`INPUT.MIN_SIZE_TRAIN` with several sizes) costs as much as its largest
image, because the batch is padded to it; one factor per batch makes the smaller sizes cheaper
(mmdetection's `BatchSyncRandomResize`, which its YOLOX configs use). The factor of an
iteration is a function of `(SEED, iteration)` only: every rank draws the same one, and a
resumed run draws the same as an uninterrupted one. With `INPUT.BATCH_SCALES_UNTIL` < 1 the
factors apply to the first part of the run only and the rest trains at the `Resize` size (a
progressive-resizing schedule: the cheap small batches first, the size of the test last).
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator, Sequence

import torch.nn.functional as F

from detection.structures.image_list import ImageList, to_image_list


class BatchScaleSchedule:
    """The factor by which iteration `it` (0-based) of a `max_iter` run rescales its batch: one
    of `scales`, drawn from `(seed, it)`, for `it < until * max_iter`; 1 afterwards."""

    def __init__(self, *, scales: Sequence[float], until: float, max_iter: int, seed: int) -> None:
        if len(scales) == 0 or min(scales) <= 0:
            raise ValueError(f"scales must be positive factors, got {tuple(scales)}")
        if not 0.0 < until <= 1.0:
            raise ValueError(f"until must be in (0, 1], got {until}")
        self.scales = tuple(float(s) for s in scales)
        self.last = until * max_iter  # iterations before it are rescaled
        self.seed = seed

    @classmethod
    def from_config(cls, cfg) -> "BatchScaleSchedule | None":
        """The schedule of INPUT.BATCH_SCALES_TRAIN / BATCH_SCALES_UNTIL, None when it is off."""
        inp = cfg.INPUT
        if len(inp.BATCH_SCALES_TRAIN) == 0:
            return None
        return cls(
            scales=inp.BATCH_SCALES_TRAIN,
            until=inp.BATCH_SCALES_UNTIL,
            max_iter=cfg.SOLVER.MAX_ITER,
            seed=cfg.SEED,
        )

    def scale(self, it: int) -> float:
        if it >= self.last:
            return 1.0
        if len(self.scales) == 1:
            return self.scales[0]
        # a string seed is hashed (sha512) the same way on every platform and Python 3 version
        return random.Random(f"batch-scale/{self.seed}/{it}").choice(self.scales)


def rescale_batch(
    images: ImageList, targets: Sequence, factor: float, size_divisible: int = 0
) -> tuple[ImageList, tuple]:
    """`images` (each one's unpadded part) and their targets (boxes and masks) scaled by
    `factor` (bilinear, as `Resize`), the images padded again to a multiple of
    `size_divisible`. Each side becomes `round(side * factor)` (at least 1)."""
    if factor == 1.0:
        return images, tuple(targets)
    scaled, moved = [], []
    for (h, w), image, target in zip(images.image_sizes, images.tensors, targets):
        nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
        part = image[None, :, :h, :w]
        scaled.append(F.interpolate(part, size=(nh, nw), mode="bilinear", align_corners=False)[0])
        moved.append(target.resize((nw, nh)))
    return to_image_list(scaled, size_divisible), tuple(moved)


class BatchScaledLoader:
    """The training loader with batch `k` (iteration `start_iter + k`) rescaled by
    `schedule.scale(start_iter + k)`. `len()` and every other attribute are the loader's."""

    def __init__(
        self, loader: Iterable, schedule: BatchScaleSchedule, start_iter: int, size_divisible: int
    ) -> None:
        self.loader = loader
        self.schedule = schedule
        self.start_iter = start_iter
        self.size_divisible = size_divisible

    def __iter__(self) -> Iterator[tuple]:
        for it, (images, targets, indices) in enumerate(self.loader, self.start_iter):
            factor = self.schedule.scale(it)
            images, targets = rescale_batch(images, targets, factor, self.size_divisible)
            yield images, targets, indices

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
