"""The synthetic "shapes" instance-segmentation set, written as a real COCO-format dataset.

Each image has a textured random background and 1-5 circles, squares and triangles of random
colour, size (about 8 px up to half the shorter image side), position and rotation. Later
objects occlude earlier ones; every annotation is the VISIBLE part of its object: polygons traced
from the visible pixels, `area` and `bbox` measured on the rasterised polygons (pycocotools), so
a mask never leaves its box. Placements that would hide more than half of an earlier object or
cut a hole into it are re-drawn, so every object stays recognisable.

Layout written under `out_dir`: `annotations/instances_{train,val,test}.json`, `train/*.jpg`,
`val/*.jpg`, `test/*.jpg` (JPEG, quality 95). Generation is deterministic for a seed (each image
has its own generator, seeded by the seed, the split and its index, so the splits never share an
image). The test split is a held-out set: no config trains or is tuned on it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils

logger = logging.getLogger(__name__)

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_MAX_OBJECTS = 5
_MIN_VISIBLE_FRACTION = 0.5


def _shape_polygon(kind: int, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Vertices `(K, 2)` of a shape whose extent is about `size` pixels."""
    if kind == 1:  # circle
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        r = size / 2
    elif kind == 2:  # square, rotated; size = side
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        r = size / np.sqrt(2)
    else:  # equilateral triangle; size = circumdiameter
        t = angle + np.arange(3) * 2 * np.pi / 3
        r = size / 2
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _raster(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    rle = mask_utils.frPyObjects([poly.reshape(-1).tolist()], h, w)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _has_hole(mask: np.ndarray) -> bool:
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Polygons (flat, continuous coordinates) whose pycocotools raster is `mask`.

    Contours are traced at 2x resolution; the point `p` of the 2x grid maps to `(p + 0.5) / 2`,
    a quarter pixel outside the centres of the boundary pixels, so the raster keeps them.
    """
    big = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.5, True)  # drops staircase vertices within a quarter pixel
        if len(c) < 3:
            continue
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        polys.append([round(float(v), 2) for v in pts.reshape(-1)])
    return polys


def _background(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0, 255, 3).astype(np.float32)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(-1, 1, 2).astype(np.float32)
    tint = rng.uniform(-40, 40, 3).astype(np.float32)
    ramp = (gx * (direction[0] / w) + gy * (direction[1] / h))[..., None] * tint
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(3, 12))
    img = base + ramp + noise
    if rng.random() < 0.5:  # a few faint stripes as texture
        period = rng.uniform(6, 20)
        img = img + 10 * np.sin((gx * direction[1] - gy * direction[0]) / period)[..., None]
    return img, base


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).sum() > 150:
            return colour
    return 255 - background


def _render_image(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, List[Dict]]:
    img, bg = _background(rng, h, w)
    objects: List[Dict] = []  # each: kind, full (bool mask), visible (bool mask)
    max_side = max(min(h, w) / 2.0, 9.0)
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(1, 4))
            size = float(rng.uniform(8.0, max_side))
            angle = float(rng.uniform(0, 2 * np.pi))
            half = size / 2 if kind != 2 else size / np.sqrt(2)
            cx = float(rng.uniform(half, w - half)) if w > 2 * half else w / 2
            cy = float(rng.uniform(half, h - half)) if h > 2 * half else h / 2
            full = _raster(_shape_polygon(kind, cx, cy, size, angle), h, w)
            if full.sum() < 16:
                continue
            ok = True
            for o in objects:
                rest = o["visible"] & ~full
                if rest.sum() < _MIN_VISIBLE_FRACTION * o["full"].sum() or (
                    rest.sum() < o["visible"].sum() and _has_hole(rest)
                ):
                    ok = False
                    break
            if ok:
                break
        else:
            continue
        for o in objects:
            o["visible"] = o["visible"] & ~full
        colour = _object_colour(rng, bg)
        shade = rng.standard_normal((int(full.sum()), 3), dtype=np.float32) * 4
        img[full] = colour + shade
        polygon = _shape_polygon(kind, cx, cy, size, angle)
        objects.append({"kind": kind, "full": full, "visible": full.copy(), "polygon": polygon})
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _annotations(objects: List[Dict], h: int, w: int, image_id: int, next_id: int) -> List[Dict]:
    anns = []
    for o in objects:
        if o["visible"].sum() == o["full"].sum():  # not occluded: the exact shape polygon
            polys = [[round(float(v), 2) for v in o["polygon"].reshape(-1)]]
        else:
            polys = _mask_to_polygons(o["visible"])
        if not polys:
            continue  # fully hidden
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        area = float(mask_utils.area(rle))
        if area <= 0:
            continue
        x, y, bw, bh = [float(v) for v in mask_utils.toBbox(rle)]
        anns.append(
            {
                "id": next_id + len(anns),
                "image_id": image_id,
                "category_id": o["kind"],
                "segmentation": polys,
                "area": area,
                "bbox": [x, y, bw, bh],
                "iscrowd": 0,
            }
        )
    return anns


def generate_split(
    out_dir: str, split: str, num_images: int, seed: int, min_size: int = 128, max_size: int = 256
) -> str:
    """Write `num_images` images of `split` ("train"/"val"/"test") and their COCO JSON; return
    its path."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    if not 16 <= min_size <= max_size:
        raise ValueError(
            f"need 16 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}"
        )
    img_dir = os.path.join(out_dir, split)
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        h, w = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        img, objects = _render_image(rng, h, w)
        image_id = i + 1
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(os.path.join(img_dir, file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        annotations += _annotations(objects, h, w, image_id, len(annotations) + 1)
    ann_file = os.path.join(ann_dir, f"instances_{split}.json")
    data = {
        "info": {"description": f"synthetic shapes, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return ann_file


def generate_shapes_dataset(
    out_dir: str,
    num_train: int = 2000,
    num_val: int = 200,
    seed: int = 0,
    min_size: int = 128,
    max_size: int = 256,
    log: Optional[logging.Logger] = None,
    num_test: int = 0,
) -> Dict[str, str]:
    """Generate the splits under `out_dir`: train and val, and test when `num_test` > 0;
    returns {split: json path}."""
    log = log or logger
    start = time.time()
    out = {}
    splits = [("train", num_train), ("val", num_val)] + ([("test", num_test)] if num_test else [])
    for split, n in splits:
        out[split] = generate_split(out_dir, split, n, seed, min_size, max_size)
    log.info(
        "generated the shapes dataset in %s (%d train / %d val / %d test images, seed %d) in %.1f s",
        out_dir,
        num_train,
        num_val,
        num_test,
        seed,
        time.time() - start,
    )
    return out
