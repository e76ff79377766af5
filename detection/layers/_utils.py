"""Helpers shared by the op wrappers."""

import operator
from typing import Sequence, Union

import torch
from torch import Tensor

RoIs = Union[Tensor, Sequence[Tensor]]


def pair(value: Union[int, Sequence[int]], name: str) -> tuple[int, int]:
    """`value` as (height, width): an int is used for both; anything but integers is an error
    (no silent truncation of 1.5 to 1)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    try:
        items = tuple(operator.index(v) for v in value)
    except TypeError:
        items = ()
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    return items  # type: ignore[return-value]


def convert_boxes_to_roi_format(rois: RoIs) -> Tensor:
    """RoIs as one Tensor[R, 5] (batch_index, x1, y1, x2, y2).

    Accepts a Tensor[R, 5] (returned as is) or a list with one Tensor[Ri, 4] (x1, y1, x2, y2) per
    image, whose position in the list is the batch index.
    """
    if isinstance(rois, Tensor):
        if rois.dim() != 2 or rois.size(1) != 5:
            raise ValueError(
                f"rois must be a Tensor[R, 5] (batch_index, x1, y1, x2, y2) or a list of "
                f"Tensor[Ri, 4], got a tensor of shape {tuple(rois.shape)}"
            )
        return rois
    if not isinstance(rois, (list, tuple)):
        raise TypeError(f"rois must be a Tensor[R, 5] or a list of Tensor[Ri, 4], got {type(rois)}")
    if len(rois) == 0:
        raise ValueError("rois: an empty list has no dtype/device; pass a Tensor[0, 5] instead")
    for i, boxes in enumerate(rois):
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.size(1) != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes)
            raise ValueError(f"rois[{i}] must be a Tensor[Ri, 4] (x1, y1, x2, y2), got {shape}")
    boxes = torch.cat([b.to(rois[0].dtype) for b in rois], dim=0)
    index = torch.cat(
        [
            torch.full((len(b), 1), i, dtype=boxes.dtype, device=boxes.device)
            for i, b in enumerate(rois)
        ]
    )
    return torch.cat([index, boxes], dim=1)
