"""Synthetic training batches for benchmarks and compile checks: random images of a config's
training size, each with three bright squares as targets (boxes, labels, polygon masks)."""

from __future__ import annotations

import torch

from detection.structures.bounding_box import BoxList
from detection.structures.image_list import ImageList, to_image_list
from detection.structures.segmentation_mask import SegmentationMask


def synthetic_batch(
    cfg,
    n: int,
    *,
    seed: int = 0,
    min_side: int = 16,
    width: int | None = None,
    device: str = "cpu",
) -> tuple[ImageList, list[BoxList]]:
    """`(ImageList, [BoxList])` of `n` images `cfg.INPUT.MIN_SIZE_TRAIN[0]` high and `width`
    wide (default: 4:3, capped at `INPUT.MAX_SIZE_TRAIN`), noise of std 30 with three squares
    (sides `min_side` to half the height) 80 brighter, labelled 1, 2, 3 (modulo the number of
    classes, never background), deterministic for `seed`; padded to
    `DATALOADER.SIZE_DIVISIBILITY` and moved to `device`."""
    g = torch.Generator().manual_seed(seed)
    h = cfg.INPUT.MIN_SIZE_TRAIN[0]
    w = width or min(cfg.INPUT.MAX_SIZE_TRAIN, h * 4 // 3)
    labels = (torch.arange(1, 4) % cfg.MODEL.ROI_HEADS.NUM_CLASSES).clamp(min=1)
    images, targets = [], []
    for _ in range(n):
        img = torch.randn(3, h, w, generator=g) * 30
        boxes, polys = [], []
        for _k in range(3):
            s = int(torch.randint(min_side, h // 2, (1,), generator=g))
            x = int(torch.randint(0, w - s, (1,), generator=g))
            y = int(torch.randint(0, h - s, (1,), generator=g))
            img[:, y : y + s, x : x + s] += 80.0
            boxes.append([x, y, x + s, y + s])
            polys.append([[x, y, x + s, y, x + s, y + s, x, y + s]])
        t = BoxList(torch.tensor(boxes, dtype=torch.float32), (w, h), mode="xyxy")
        t.add_field("labels", labels.clone())
        t.add_field("masks", SegmentationMask(polys, (w, h), mode="poly"))
        images.append(img.to(device))
        targets.append(t.to(device))
    return to_image_list(images, cfg.DATALOADER.SIZE_DIVISIBILITY), targets
