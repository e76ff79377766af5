"""`BoxList`: the boxes of one image plus per-box fields (labels, scores, masks, ...).

Conventions (see ABSTRACTIONS.md):
- `image_size` is `(width, height)` of the image the boxes live in.
- Coordinates are continuous pixels: the image covers `[0, w] x [0, h]`, a box `(x1, y1, x2, y2)`
  has width `x2 - x1` (no "+1" as in the old Detectron convention).
- `mode` is "xyxy" (corners) or "xywh" (top-left corner and size).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false

FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1

_MODES = ("xyxy", "xywh")


def _size(v: Any) -> Any:
    """`int(v)`, except that a symbolic size (torch.export with a dynamic image size) stays
    symbolic: `int()` would fix it to the example's value."""
    return v if isinstance(v, torch.SymInt) else int(v)


class BoxList:
    """Boxes `Tensor[N, 4]` of one image of size `(w, h)` with extra per-box fields.

    Fields are tensors with N rows or objects supporting `resize/transpose/crop/__getitem__`
    (e.g. `SegmentationMask`); geometric operations apply to them as well.
    """

    def __init__(self, bbox: Any, image_size: Sequence[int], mode: str = "xyxy") -> None:
        """bbox: `Tensor[N, 4]` (floating tensors keep their dtype; anything else becomes
        float32), image_size: `(w, h)`, mode: "xyxy" or "xywh"."""
        if isinstance(bbox, torch.Tensor) and bbox.is_floating_point():
            pass  # keep dtype (e.g. half under autocast), device and autograd graph
        else:
            device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
            bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        if guard_or_false(bbox.numel() == 0):  # False for an unbacked size (torch.export)
            bbox = bbox.reshape(0, 4)
        if bbox.ndim != 2 or bbox.size(-1) != 4:
            raise ValueError(f"bbox must be Tensor[N, 4], got shape {tuple(bbox.shape)}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (width, height), got {image_size!r}")
        self.bbox = bbox
        self.size = (_size(image_size[0]), _size(image_size[1]))
        self.mode = mode
        self.extra_fields: Dict[str, Any] = {}

    # ------------------------------------------------------------------ fields
    def add_field(self, field: str, field_data: Any) -> None:
        self.extra_fields[field] = field_data

    def get_field(self, field: str) -> Any:
        if field not in self.extra_fields:
            raise KeyError(f"BoxList has no field {field!r}; fields: {self.fields()}")
        return self.extra_fields[field]

    def has_field(self, field: str) -> bool:
        return field in self.extra_fields

    def fields(self) -> List[str]:
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, other: "BoxList") -> None:
        for k, v in other.extra_fields.items():
            self.extra_fields[k] = v

    def copy_with_fields(
        self, fields: Union[str, Sequence[str]], skip_missing: bool = False
    ) -> "BoxList":
        """A new BoxList with the same boxes and only the given fields."""
        out = BoxList(self.bbox, self.size, self.mode)
        if isinstance(fields, str):
            fields = [fields]
        for f in fields:
            if self.has_field(f):
                out.add_field(f, self.get_field(f))
            elif not skip_missing:
                raise KeyError(f"BoxList has no field {f!r}; fields: {self.fields()}")
        return out

    # ------------------------------------------------------------------ modes
    def _split_into_xyxy(self) -> Tuple[torch.Tensor, ...]:
        if self.mode == "xyxy":
            return self.bbox.split(1, dim=-1)
        x, y, w, h = self.bbox.split(1, dim=-1)
        return x, y, x + w.clamp(min=0), y + h.clamp(min=0)

    def convert(self, mode: str) -> "BoxList":
        """The same boxes in `mode` ("xyxy" or "xywh"); fields are shared."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode == self.mode:
            return self
        x1, y1, x2, y2 = self._split_into_xyxy()
        if mode == "xyxy":
            bbox = torch.cat((x1, y1, x2, y2), dim=-1)
        else:
            bbox = torch.cat((x1, y1, x2 - x1, y2 - y1), dim=-1)
        out = BoxList(bbox, self.size, mode=mode)
        out._copy_extra_fields(self)
        return out

    # ------------------------------------------------------------------ geometry
    def resize(self, size: Sequence[int]) -> "BoxList":
        """Boxes scaled to an image resized from `self.size` to `size` = (w, h)."""
        ratios = tuple(float(s) / float(s_orig) for s, s_orig in zip(size, self.size))
        if ratios[0] == ratios[1]:
            out = BoxList(self.bbox * ratios[0], size, mode=self.mode)
        else:
            rw, rh = ratios
            x1, y1, x2, y2 = self._split_into_xyxy()
            bbox = torch.cat((x1 * rw, y1 * rh, x2 * rw, y2 * rh), dim=-1)
            out = BoxList(bbox, size, mode="xyxy").convert(self.mode)
        for k, v in self.extra_fields.items():
            if not isinstance(v, torch.Tensor):
                v = v.resize(size)
            out.add_field(k, v)
        return out

    def transpose(self, method: int) -> "BoxList":
        """Flip: FLIP_LEFT_RIGHT maps x -> w - x, FLIP_TOP_BOTTOM maps y -> h - y."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise ValueError("method must be FLIP_LEFT_RIGHT or FLIP_TOP_BOTTOM")
        w, h = self.size
        x1, y1, x2, y2 = self._split_into_xyxy()
        if method == FLIP_LEFT_RIGHT:
            bbox = torch.cat((w - x2, y1, w - x1, y2), dim=-1)
        else:
            bbox = torch.cat((x1, h - y2, x2, h - y1), dim=-1)
        out = BoxList(bbox, self.size, mode="xyxy")
        for k, v in self.extra_fields.items():
            if not isinstance(v, torch.Tensor):
                v = v.transpose(method)
            out.add_field(k, v)
        return out.convert(self.mode)

    def crop(self, box: Sequence[float]) -> "BoxList":
        """Boxes in the frame of the region `box` = (x1, y1, x2, y2), clamped to it.

        The new image size is `(x2 - x1, y2 - y1)`. Boxes are not removed (use clip_to_image).
        """
        cx1, cy1, cx2, cy2 = [float(v) for v in box]
        w, h = cx2 - cx1, cy2 - cy1
        x1, y1, x2, y2 = self._split_into_xyxy()
        bbox = torch.cat(
            (
                (x1 - cx1).clamp(min=0, max=w),
                (y1 - cy1).clamp(min=0, max=h),
                (x2 - cx1).clamp(min=0, max=w),
                (y2 - cy1).clamp(min=0, max=h),
            ),
            dim=-1,
        )
        out = BoxList(bbox, (int(round(w)), int(round(h))), mode="xyxy")
        for k, v in self.extra_fields.items():
            if not isinstance(v, torch.Tensor):
                v = v.crop(box)
            out.add_field(k, v)
        return out.convert(self.mode)

    def clip_to_image(self, remove_empty: bool = True) -> "BoxList":
        """Clamp boxes into `[0, w] x [0, h]`; with remove_empty drop boxes of zero width/height."""
        w, h = self.size
        if self.mode == "xyxy":
            self.bbox[:, 0].clamp_(min=0, max=w)
            self.bbox[:, 1].clamp_(min=0, max=h)
            self.bbox[:, 2].clamp_(min=0, max=w)
            self.bbox[:, 3].clamp_(min=0, max=h)
            box = self.bbox
        else:
            xyxy = self.convert("xyxy")
            xyxy.clip_to_image(remove_empty=False)
            self.bbox = xyxy.convert("xywh").bbox
            box = xyxy.bbox
        if remove_empty:
            keep = (box[:, 3] > box[:, 1]) & (box[:, 2] > box[:, 0])
            return self[keep]
        return self

    def area(self) -> torch.Tensor:
        """Tensor[N] of box areas `(x2 - x1) * (y2 - y1)`."""
        if self.mode == "xyxy":
            b = self.bbox
            return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return self.bbox[:, 2] * self.bbox[:, 3]

    # ------------------------------------------------------------------ container
    def to(self, device: Union[str, torch.device]) -> "BoxList":
        out = BoxList(self.bbox.to(device), self.size, self.mode)
        for k, v in self.extra_fields.items():
            if hasattr(v, "to"):
                v = v.to(device)
            out.add_field(k, v)
        return out

    def __getitem__(self, item: Any) -> "BoxList":
        if isinstance(item, int):
            item = [item]
        out = BoxList(self.bbox[item], self.size, self.mode)
        for k, v in self.extra_fields.items():
            out.add_field(k, v[item])
        return out

    def __len__(self) -> int:
        return self.bbox.shape[0]

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_boxes={len(self)}, image_width={self.size[0]}, "
            f"image_height={self.size[1]}, mode={self.mode})"
        )
