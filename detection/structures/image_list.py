"""`ImageList`: a batch of differently sized images padded into one tensor.

`tensors` is `Tensor[B, C, H, W]` (zero padding at the bottom and right) and `image_sizes[i]` is
the `(h, w)` of image i before padding -- note `(h, w)` here versus `(w, h)` in `BoxList.size`.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import torch


def _size(v):
    return v if isinstance(v, torch.SymInt) else int(v)


class ImageList:
    """Padded batch `tensors: Tensor[B, C, H, W]`; `image_sizes`: list of (h, w) before padding."""

    def __init__(self, tensors: torch.Tensor, image_sizes: Sequence[Tuple[int, int]]) -> None:
        if not isinstance(tensors, torch.Tensor) or tensors.ndim != 4:
            raise ValueError("tensors must be a Tensor[B, C, H, W]")
        if len(image_sizes) != tensors.shape[0]:
            raise ValueError(
                f"image_sizes has {len(image_sizes)} entries for a batch of {tensors.shape[0]}"
            )
        self.tensors = tensors
        # a symbolic size (torch.export, dynamic image size) stays symbolic; int() would fix it
        self.image_sizes: List[Tuple[int, int]] = [(_size(h), _size(w)) for h, w in image_sizes]

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "ImageList":
        return ImageList(self.tensors.to(device, non_blocking=non_blocking), self.image_sizes)

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __repr__(self) -> str:
        return f"ImageList(tensors={tuple(self.tensors.shape)}, image_sizes={self.image_sizes})"


def to_image_list(
    tensors: Union[torch.Tensor, Sequence[torch.Tensor], ImageList], size_divisible: int = 0
) -> ImageList:
    """Batch images into an `ImageList`.

    Args:
        tensors: an ImageList (returned as is), a `Tensor[C, H, W]` or `Tensor[B, C, H, W]`, or a
            list of `Tensor[C, Hi, Wi]` (same C). Images are padded with zeros at the bottom/right.
        size_divisible: when > 0, the padded H and W are rounded up to a multiple of it.
    """
    if isinstance(tensors, ImageList):
        return tensors
    if size_divisible < 0:
        raise ValueError(f"size_divisible must be >= 0, got {size_divisible}")
    if isinstance(tensors, torch.Tensor):
        if tensors.ndim == 3:
            tensors = tensors[None]
        if tensors.ndim != 4:
            raise ValueError(f"tensors must be 3-D or 4-D, got shape {tuple(tensors.shape)}")
        tensors = list(tensors.unbind(0))
    if not isinstance(tensors, (list, tuple)) or len(tensors) == 0:
        raise ValueError(
            "tensors must be a Tensor, a non-empty list of Tensor[C, H, W] or an ImageList"
        )
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ValueError("every image in tensors must be a Tensor[C, H, W]")
    channels = {t.shape[0] for t in tensors}
    if len(channels) != 1:
        raise ValueError(f"images in tensors have different channel counts {sorted(channels)}")
    max_h = max(t.shape[1] for t in tensors)
    max_w = max(t.shape[2] for t in tensors)
    if size_divisible > 0:
        max_h = int(math.ceil(max_h / size_divisible) * size_divisible)
        max_w = int(math.ceil(max_w / size_divisible) * size_divisible)
    first = tensors[0]
    batched = first.new_zeros((len(tensors), first.shape[0], max_h, max_w))
    for img, pad in zip(tensors, batched):
        pad[:, : img.shape[1], : img.shape[2]].copy_(img)
    image_sizes = [(t.shape[1], t.shape[2]) for t in tensors]
    return ImageList(batched, image_sizes)
