"""Collation of `(image, target, index)` samples into `(ImageList, targets, indices)`."""

from __future__ import annotations

from typing import List, Tuple

from detection.structures.image_list import ImageList, to_image_list


class BatchCollator:
    """Pads the images into an `ImageList` (sides rounded up to `size_divisible` when > 0)."""

    def __init__(self, size_divisible: int = 0) -> None:
        self.size_divisible = size_divisible

    def __call__(self, batch: List[Tuple]) -> Tuple[ImageList, tuple, tuple]:
        images, targets, indices = zip(*batch)
        return to_image_list(list(images), self.size_divisible), tuple(targets), tuple(indices)
