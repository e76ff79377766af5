"""`SegmentationMask`: the instance masks of one image, as polygons or binary masks.

- mode "poly": `instances` is a list (one entry per instance) of lists of polygons; a polygon is a
  flat sequence `[x0, y0, x1, y1, ...]` of continuous pixel coordinates (COCO "segmentation").
- mode "mask": `instances` is a `Tensor[N, H, W]` (any dtype, non-zero = inside), a list of
  `(H, W)` arrays, or a list of COCO RLE dicts (`{"size": [H, W], "counts": ...}`).

`size` is the image `(width, height)`, like `BoxList.size`. Geometric operations return new
objects and follow `BoxList`'s conventions (x -> w - x for a left-right flip, etc.).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F

from detection.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM

_MODES = ("poly", "mask")


def _as_polygon(p: Any) -> torch.Tensor:
    t = torch.as_tensor(p, dtype=torch.float32).reshape(-1)
    if t.numel() < 6 or t.numel() % 2:
        raise ValueError(
            f"a polygon needs >= 3 (x, y) points as a flat list, got {t.numel()} values"
        )
    return t


def _rasterise_polygons(polygons: Sequence[torch.Tensor], height: int, width: int) -> np.ndarray:
    """Union of the polygons as an `(height, width)` uint8 array (pycocotools rasteriser)."""
    if len(polygons) == 0 or height <= 0 or width <= 0:
        return np.zeros((max(height, 0), max(width, 0)), dtype=np.uint8)
    rles = mask_utils.frPyObjects([p.double().tolist() for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def _index_list(item: Any, n: int) -> List[int]:
    if isinstance(item, int):
        return [item if item >= 0 else item + n]
    if isinstance(item, slice):
        return list(range(n))[item]
    if isinstance(item, torch.Tensor):
        if item.dtype == torch.bool:
            if item.numel() != n:
                raise IndexError(f"boolean index of length {item.numel()} for {n} instances")
            return item.nonzero().flatten().tolist()
        return [int(i) for i in item.flatten().tolist()]
    if isinstance(item, np.ndarray):
        return _index_list(torch.from_numpy(item), n)
    return [int(i) for i in item]


class SegmentationMask:
    """N instance masks of an image of size `(w, h)`; see the module docstring for `mode`."""

    def __init__(self, instances: Any, size: Sequence[int], mode: str = "poly") -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if len(size) != 2:
            raise ValueError(f"size must be (width, height), got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        self.mode = mode
        w, h = self.size
        if mode == "poly":
            if isinstance(instances, torch.Tensor):
                raise ValueError("mode='poly' needs a list of lists of polygons, got a Tensor")
            self.polygons: List[List[torch.Tensor]] = [
                [_as_polygon(p) for p in inst] for inst in instances
            ]
        else:
            self.masks = self._masks_from(instances, h, w)

    @staticmethod
    def _masks_from(instances: Any, h: int, w: int) -> torch.Tensor:
        if isinstance(instances, torch.Tensor):
            masks = instances
            if masks.ndim == 2:
                masks = masks[None]
        else:
            items = []
            for inst in instances:
                if isinstance(inst, dict):  # RLE
                    rle = inst
                    if isinstance(rle.get("counts"), list):  # uncompressed RLE
                        rle = mask_utils.frPyObjects(rle, rle["size"][0], rle["size"][1])
                    inst = mask_utils.decode(rle)
                items.append(torch.as_tensor(np.asarray(inst)))
            masks = torch.stack(items) if items else torch.zeros((0, h, w), dtype=torch.uint8)
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (h, w):
            raise ValueError(
                f"masks must be Tensor[N, {h}, {w}] for size (w={w}, h={h}), "
                f"got shape {tuple(masks.shape)}"
            )
        return (masks != 0).to(torch.uint8)

    # ------------------------------------------------------------------ geometry
    def transpose(self, method: int) -> "SegmentationMask":
        """Flip left-right (x -> w - x) or top-bottom (y -> h - y)."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise ValueError("method must be FLIP_LEFT_RIGHT or FLIP_TOP_BOTTOM")
        if self.mode == "mask":
            dim = 2 if method == FLIP_LEFT_RIGHT else 1
            return SegmentationMask(self.masks.flip(dim), self.size, "mask")
        w, h = self.size
        axis, length = (0, w) if method == FLIP_LEFT_RIGHT else (1, h)
        out = []
        for inst in self.polygons:
            flipped = []
            for p in inst:
                q = p.clone()
                q[axis::2] = length - q[axis::2]
                flipped.append(q)
            out.append(flipped)
        return SegmentationMask(out, self.size, "poly")

    def resize(self, size: Sequence[int]) -> "SegmentationMask":
        """Scale to an image of `size` = (w, h); binary masks use nearest-neighbour sampling."""
        new_w, new_h = int(size[0]), int(size[1])
        if self.mode == "mask":
            if len(self) == 0:
                return SegmentationMask(
                    torch.zeros((0, new_h, new_w), dtype=torch.uint8, device=self.masks.device),
                    size,
                    "mask",
                )
            m = F.interpolate(self.masks[None].float(), size=(new_h, new_w), mode="nearest")[0]
            return SegmentationMask(m, size, "mask")
        rw, rh = new_w / self.size[0], new_h / self.size[1]
        out = []
        for inst in self.polygons:
            scaled = []
            for p in inst:
                q = p.clone()
                q[0::2] *= rw
                q[1::2] *= rh
                scaled.append(q)
            out.append(scaled)
        return SegmentationMask(out, size, "poly")

    def crop(self, box: Sequence[float]) -> "SegmentationMask":
        """Masks in the frame of region `box` = (x1, y1, x2, y2); new size (x2 - x1, y2 - y1).

        Polygons are shifted (not clipped: rasterisation clips them); binary masks are cut at
        the rounded box and zero-padded where the box leaves the image.
        """
        x1, y1, x2, y2 = [float(v) for v in box]
        new_w, new_h = int(round(x2 - x1)), int(round(y2 - y1))
        if self.mode == "poly":
            out = []
            for inst in self.polygons:
                shifted = []
                for p in inst:
                    q = p.clone()
                    q[0::2] -= x1
                    q[1::2] -= y1
                    shifted.append(q)
                out.append(shifted)
            return SegmentationMask(out, (new_w, new_h), "poly")
        ix, iy = int(round(x1)), int(round(y1))
        w, h = self.size
        out = self.masks.new_zeros((len(self), new_h, new_w))
        sx0, sy0 = max(ix, 0), max(iy, 0)
        sx1, sy1 = min(ix + new_w, w), min(iy + new_h, h)
        if sx1 > sx0 and sy1 > sy0:
            out[:, sy0 - iy : sy1 - iy, sx0 - ix : sx1 - ix] = self.masks[:, sy0:sy1, sx0:sx1]
        return SegmentationMask(out, (new_w, new_h), "mask")

    # ------------------------------------------------------------------ rasterisation
    def get_mask_tensor(self) -> torch.Tensor:
        """All instances as a binary `Tensor[N, h, w]` uint8 (polygons rasterised)."""
        if self.mode == "mask":
            return self.masks
        w, h = self.size
        if len(self) == 0:
            return torch.zeros((0, h, w), dtype=torch.uint8)
        return torch.stack(
            [torch.from_numpy(_rasterise_polygons(inst, h, w)) for inst in self.polygons]
        )

    def convert(self, mode: str) -> "SegmentationMask":
        """Polygons -> binary masks (mode "mask"); masks cannot be turned back into polygons."""
        if mode == self.mode:
            return self
        if mode == "mask":
            return SegmentationMask(self.get_mask_tensor(), self.size, "mask")
        raise ValueError("converting binary masks to polygons is not supported")

    def crop_and_resize(self, boxes: torch.Tensor, M: int) -> torch.Tensor:
        """Mask-head targets: instance i cut to `boxes[i]` and resized to M x M.

        Args:
            boxes: `Tensor[N, 4]` xyxy boxes in this image's coordinates, one per instance.
            M: target resolution.
        Returns:
            `Tensor[N, M, M]` float32 of 0/1 on `boxes.device`. Polygons are shifted to the box
            and scaled by `M / max(box side, 1)` before rasterising (no resampling blur);
            binary masks are cut at the rounded box and bilinearly resized, thresholded at 0.5.
        """
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError("boxes must be a Tensor[N, 4] (xyxy)")
        if boxes.shape[0] != len(self):
            raise ValueError(f"boxes has {boxes.shape[0]} rows for {len(self)} instances")
        if M <= 0:
            raise ValueError(f"M must be positive, got {M}")
        device = boxes.device
        if len(self) == 0:
            return torch.zeros((0, M, M), dtype=torch.float32, device=device)
        out = [self._crop_resize_one(i, b, M) for i, b in enumerate(boxes.detach().cpu().tolist())]
        return torch.stack(out).to(device)

    def _crop_resize_one(self, i: int, box: List[float], M: int) -> torch.Tensor:
        x1, y1, x2, y2 = box
        bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        if self.mode == "poly":
            polys = []
            for p in self.polygons[i]:
                q = p.clone().double()
                q[0::2] = (q[0::2] - x1) * (M / bw)
                q[1::2] = (q[1::2] - y1) * (M / bh)
                polys.append(q)
            return torch.from_numpy(_rasterise_polygons(polys, M, M)).float()
        single = SegmentationMask(self.masks[i : i + 1].cpu(), self.size, "mask")
        cut = single.crop((x1, y1, x1 + bw, y1 + bh)).masks
        if cut.shape[1] == 0 or cut.shape[2] == 0:
            return torch.zeros((M, M), dtype=torch.float32)
        m = F.interpolate(cut[None].float(), size=(M, M), mode="bilinear", align_corners=False)
        return (m[0, 0] >= 0.5).float()

    # ------------------------------------------------------------------ container
    def __getitem__(self, item: Any) -> "SegmentationMask":
        idx = _index_list(item, len(self))
        if self.mode == "mask":
            index = torch.as_tensor(idx, dtype=torch.long, device=self.masks.device)
            return SegmentationMask(self.masks.index_select(0, index), self.size, "mask")
        return SegmentationMask([self.polygons[i] for i in idx], self.size, "poly")

    def __len__(self) -> int:
        return self.masks.shape[0] if self.mode == "mask" else len(self.polygons)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def to(self, device: Union[str, torch.device]) -> "SegmentationMask":
        """Binary masks move to `device`; polygons stay on the CPU (rasterised there)."""
        if self.mode == "mask":
            return SegmentationMask(self.masks.to(device), self.size, "mask")
        return self

    def __repr__(self) -> str:
        return (
            f"SegmentationMask(num_instances={len(self)}, image_width={self.size[0]}, "
            f"image_height={self.size[1]}, mode={self.mode})"
        )
