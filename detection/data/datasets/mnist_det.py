"""The "mnist_det" instance-segmentation set: real MNIST digits composed onto cluttered canvases.

Each canvas (sides `min_size`-`max_size`) has a textured background, unannotated clutter (random
lines and fragments of other digits) and 2-6 digits, each a real MNIST digit cropped to its
strokes and resized to a height drawn log-uniformly from `min_digit`-`max_digit` px (12-120 by
default: a 10x span), painted in a random bright colour with its grey level as opacity. Later
digits occlude earlier ones; placements that would hide more than half of an earlier digit are
re-drawn. Every annotation is the VISIBLE stroke mask of its digit (grey level > 127, minus what
later digits cover), stored as COCO RLE (holes of 0, 6, 8, 9 kept); `bbox` is measured on that
mask. `area` is the box area, not the stroke area: COCOeval uses `area` only to split small /
medium / large (32^2, 96^2 px), and a thin stroke covers a small part of its box (a 120 px digit
about 3000 px^2), so with stroke areas no digit would be "large". Classes: the ten digits, category ids 1-10 named "0"-"9".

`train` canvases use the MNIST training digits and `val` canvases the test digits, so the
validation writers are unseen. Layout under `out_dir`: `annotations/instances_{train,val}.json`,
`train/*.jpg`, `val/*.jpg`. Deterministic for a seed: canvas i of a split depends only on
(seed, split, i) and the MNIST files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from detection.data.datasets.mnist import find_mnist, load_mnist

logger = logging.getLogger(__name__)

CATEGORIES = [{"id": d + 1, "name": str(d), "supercategory": "digit"} for d in range(10)]
SPLITS = {"train": ("train", 0), "val": ("test", 1)}  # split -> (MNIST split, generator id)
DEFAULTS = {
    "num_train": 2000,
    "num_val": 500,
    "seed": 0,
    "min_size": 160,
    "max_size": 224,
    "min_digit": 12,
    "max_digit": 120,
}
_DIGITS_PER_IMAGE = (2, 6)
_MIN_VISIBLE_FRACTION = 0.5


def _tight(digit: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(digit > 0)
    return digit[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A dark, smoothly varying, noisy colour background `float32[h, w, 3]` in [0, 255]."""
    base = rng.uniform(0, 70, 3)
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(-30, 30, 3)
    ramp = ramp + np.linspace(0, 1, h)[:, None, None] * rng.uniform(-30, 30, 3)
    noise = rng.normal(0, rng.uniform(2, 12), (h, w, 1))
    return np.clip(base + ramp + noise, 0, 255).astype(np.float32)


def _paint(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    a = alpha[..., None]
    img *= 1 - a
    img += a * colour


def _clutter(rng, img: np.ndarray, pool: np.ndarray) -> None:
    """Unannotated distractors: thin lines and fragments (a quarter to a half) of other digits."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        layer = np.zeros((h, w), np.uint8)
        p0 = (int(rng.integers(w)), int(rng.integers(h)))
        p1 = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.line(layer, p0, p1, 255, int(rng.integers(1, 3)), cv2.LINE_AA)
        _paint(img, layer.astype(np.float32) / 255 * rng.uniform(0.3, 0.8), rng.uniform(80, 255, 3))
    for _ in range(int(rng.integers(1, 5))):
        digit = _tight(pool[int(rng.integers(len(pool)))])
        dh, dw = digit.shape
        fh, fw = max(3, int(dh * rng.uniform(0.25, 0.5))), max(3, int(dw * rng.uniform(0.3, 0.6)))
        y0, x0 = int(rng.integers(0, dh - fh + 1)), int(rng.integers(0, dw - fw + 1))
        frag = digit[y0 : y0 + fh, x0 : x0 + fw]
        side = float(np.exp(rng.uniform(np.log(8), np.log(24))))
        factor = side / max(frag.shape)
        size = (max(2, round(fw * factor)), max(2, round(fh * factor)))
        frag = cv2.resize(frag, size, interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        if frag.shape[0] >= h or frag.shape[1] >= w:
            continue
        y, x = int(rng.integers(0, h - frag.shape[0])), int(rng.integers(0, w - frag.shape[1]))
        alpha = np.zeros((h, w), np.float32)
        alpha[y : y + frag.shape[0], x : x + frag.shape[1]] = frag
        _paint(img, alpha, rng.uniform(120, 255, 3))


def render_canvas(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    h: int,
    w: int,
    min_digit: int,
    max_digit: int,
) -> tuple[np.ndarray, list[dict]]:
    """(uint8[h, w, 3] BGR image, [{"label", "visible" bool[h, w]}...]) of one canvas."""
    img = _background(rng, h, w)
    _clutter(rng, img, images)
    objects: list[dict] = []
    for _ in range(int(rng.integers(_DIGITS_PER_IMAGE[0], _DIGITS_PER_IMAGE[1] + 1))):
        index = int(rng.integers(len(images)))
        digit = _tight(images[index])
        height = float(np.exp(rng.uniform(np.log(min_digit), np.log(max_digit))))
        factor = min(height / digit.shape[0], (w - 2) / digit.shape[1], (h - 2) / digit.shape[0])
        size = (max(2, round(digit.shape[1] * factor)), max(2, round(digit.shape[0] * factor)))
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(digit, size, interpolation=interp).astype(np.float32) / 255
        dh, dw = resized.shape
        for _attempt in range(10):
            y, x = int(rng.integers(0, h - dh + 1)), int(rng.integers(0, w - dw + 1))
            alpha = np.zeros((h, w), np.float32)
            alpha[y : y + dh, x : x + dw] = resized
            cover = alpha > 0.5
            if cover.sum() == 0:
                break
            if all(
                (o["visible"] & ~cover).sum() >= _MIN_VISIBLE_FRACTION * o["full"].sum()
                for o in objects
            ):
                for o in objects:
                    o["visible"] &= ~cover
                _paint(img, alpha, rng.uniform(150, 255, 3))
                objects.append(
                    {"label": int(labels[index]), "full": cover, "visible": cover.copy()}
                )
                break
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), objects


def _annotations(objects: list[dict], image_id: int, next_id: int) -> list[dict]:
    anns = []
    for o in objects:
        rle = mask_utils.encode(np.asfortranarray(o["visible"].astype(np.uint8)))
        if float(mask_utils.area(rle)) <= 0:
            continue
        rle["counts"] = rle["counts"].decode("ascii")
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        anns.append(
            {
                "id": next_id + len(anns),
                "image_id": image_id,
                "category_id": o["label"] + 1,
                "segmentation": rle,
                "area": bbox[2] * bbox[3],  # the box, not the strokes: see the module docstring
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    return anns


def generate_split(
    out_dir: str,
    split: str,
    num_images: int,
    seed: int,
    mnist_dir: str,
    min_size: int = DEFAULTS["min_size"],
    max_size: int = DEFAULTS["max_size"],
    min_digit: int = DEFAULTS["min_digit"],
    max_digit: int = DEFAULTS["max_digit"],
) -> str:
    """Write `num_images` canvases of `split` ("train"/"val") and their COCO JSON; return its path."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not 8 <= min_digit <= max_digit < min_size <= max_size:
        raise ValueError(
            "need 8 <= min_digit <= max_digit < min_size <= max_size, got "
            f"{min_digit}, {max_digit}, {min_size}, {max_size}"
        )
    mnist_split, split_id = SPLITS[split]
    pool, labels = load_mnist(mnist_dir, mnist_split)
    img_dir = os.path.join(out_dir, split)
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, split_id, i])
        h, w = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        img, objects = render_canvas(rng, pool, labels, h, w, min_digit, max_digit)
        image_id = i + 1
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(os.path.join(img_dir, file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        annotations += _annotations(objects, image_id, len(annotations) + 1)
    ann_file = os.path.join(ann_dir, f"instances_{split}.json")
    data = {
        "info": {
            "description": f"MNIST digits on cluttered canvases, seed {seed}, "
            f"digit heights {min_digit}-{max_digit} px, MNIST {mnist_split} digits"
        },
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return ann_file


def generate_mnist_det_dataset(
    out_dir: str,
    mnist_dir: str,
    num_train: int = DEFAULTS["num_train"],
    num_val: int = DEFAULTS["num_val"],
    seed: int = DEFAULTS["seed"],
    min_size: int = DEFAULTS["min_size"],
    max_size: int = DEFAULTS["max_size"],
    min_digit: int = DEFAULTS["min_digit"],
    max_digit: int = DEFAULTS["max_digit"],
    log: logging.Logger | None = None,
) -> dict[str, str]:
    """Both splits under `out_dir` (written to a temporary folder, then renamed, so concurrent
    processes never see half a set); returns {"train": json path, "val": json path}."""
    log = log or logger
    start = time.time()
    tmp = f"{out_dir.rstrip(os.sep)}.tmp{os.getpid()}"
    for split, n in (("train", num_train), ("val", num_val)):
        generate_split(tmp, split, n, seed, mnist_dir, min_size, max_size, min_digit, max_digit)
    try:
        os.rename(tmp, out_dir)
    except OSError:  # another process finished first: its copy is identical (same seed)
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "generated the mnist_det dataset in %s (%d train / %d val canvases, seed %d) in %.1f s",
        out_dir,
        num_train,
        num_val,
        seed,
        time.time() - start,
    )
    return {s: os.path.join(out_dir, "annotations", f"instances_{s}.json") for s in SPLITS}


def ensure_mnist_det(root: str) -> None:
    """Generate `root/mnist_det` with the defaults from the MNIST found under `root` (the
    catalog's first-use hook for `mnist_det_train` / `mnist_det_val`)."""
    out = os.path.join(root, "mnist_det")
    if os.path.isdir(out):
        return
    mnist_dir, _ = find_mnist(root)
    logger.info("%s is missing: generating it from the MNIST digits in %s", out, mnist_dir)
    generate_mnist_det_dataset(out, mnist_dir, **DEFAULTS)
