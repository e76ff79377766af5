"""Data for the Scaled-MNIST experiments: idx files, synthetic digits, the scale transform.

Images are `uint8` arrays `[N, 28, 28]` (white digit on black, as in MNIST) and labels `int64`
arrays `[N]`. Both real MNIST and the synthetic digit set live on disk in the original MNIST idx
format (`train-images-idx3-ubyte`, ... optionally gzipped), so one reader serves both.
"""

from __future__ import annotations

import os
from typing import Iterable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

# The idx reader and the MNIST lookup live in detection.data.datasets.mnist (the digit-detection
# set uses them too); re-exported here under their old names.
from detection.data.datasets.mnist import (  # noqa: F401
    SPLIT_FILES,
    find_mnist,
    load_idx_split,
    load_mnist,
    mnist_help,
    read_idx,
    write_idx,
)

IMAGE_SIZE = 28
MNIST_MEAN = 0.1307  # of real MNIST, in [0, 1]; used for the synthetic set too
MNIST_STD = 0.3081
TEST_SCALES = tuple(round(0.5 + 0.1 * i, 1) for i in range(11))  # 0.5, 0.6, ..., 1.5


# ---------------------------------------------------------------------------- synthetic digits
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)
_SPLIT_IDS = {"train": 0, "test": 1}


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic MNIST-like digit, `uint8[28, 28]`, drawn with a random Hershey font.

    Random: font (optionally italic), stroke thickness, slant (affine shear), rotation (+-12 deg),
    digit box height (17-22 px, like MNIST's 20 px box) and a shift of up to 2 px from the centre.
    """
    canvas = np.zeros((96, 96), np.uint8)
    font = int(_FONTS[rng.integers(len(_FONTS))]) | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    thickness = int(rng.integers(2, 6))
    (w, h), _ = cv2.getTextSize(str(digit), font, 1.6, thickness)
    cv2.putText(
        canvas, str(digit), ((96 - w) // 2, (96 + h) // 2), font, 1.6, 255, thickness, cv2.LINE_AA
    )
    shear = rng.uniform(-0.35, 0.35)
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lin = rot @ np.array([[1.0, shear], [0.0, 1.0]])
    centre = np.array([48.0, 48.0])
    affine = np.hstack([lin, (centre - lin @ centre)[:, None]])
    canvas = cv2.warpAffine(canvas, affine, (96, 96), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(canvas > 20)
    if len(ys) == 0:  # cannot happen for digits, but keep the function total
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    crop = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    box = rng.uniform(17.0, 22.0)
    factor = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    dy, dx = rng.integers(-2, 3, size=2)
    y0 = int(np.clip((IMAGE_SIZE - crop.shape[0]) // 2 + dy, 0, IMAGE_SIZE - crop.shape[0]))
    x0 = int(np.clip((IMAGE_SIZE - crop.shape[1]) // 2 + dx, 0, IMAGE_SIZE - crop.shape[1]))
    out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return out


def generate_synthetic(n: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic digits of `split`; image i depends only on (seed, split, i), so a smaller set
    is a prefix of a larger one. Labels cycle through 0-9 in a seeded random order."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    labels = np.zeros(n, np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        labels[i] = rng.integers(10)
        images[i] = render_digit(int(labels[i]), rng)
    return images, labels


def synthetic_dir(root: str, seed: int, train_size: int, test_size: int) -> str:
    return os.path.join(root, "synthetic_digits", f"seed{seed}_train{train_size}_test{test_size}")


def load_synthetic(
    root: str, split: str, n: int, seed: int, cache: str
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic `split` of `n` images, read from the idx cache `cache` or generated there."""
    try:
        images, labels = load_idx_split(cache, split)
        if len(images) == n:
            return images, labels
    except FileNotFoundError:
        pass
    images, labels = generate_synthetic(n, split, seed)
    img_name, lbl_name = SPLIT_FILES[split]
    write_idx(os.path.join(cache, img_name + ".gz"), images)
    write_idx(os.path.join(cache, lbl_name + ".gz"), labels.astype(np.uint8))
    return images, labels


def load_data(
    data: str, root: str, train_size: int, test_size: int, seed: int, download: bool = True
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """({"train": (images, labels), "test": (...)}, what was used) for `data` in
    {"auto", "mnist", "synthetic"}.

    "mnist": real MNIST found by `find_mnist` (error when absent); "auto": real MNIST when it is
    found, else the synthetic digits; "synthetic": the synthetic set, cached under
    `<root>/synthetic_digits/`. Real MNIST is truncated to the first `train_size` / `test_size`
    images; a size larger than the split is a ValueError. The second value records
    {"data", "data_dir", "data_source", "train_size", "test_size", "data_note"?}.
    """
    if data not in ("auto", "mnist", "synthetic"):
        raise ValueError(f"data must be 'auto', 'mnist' or 'synthetic', got {data!r}")
    note = None
    if data in ("auto", "mnist"):
        try:
            folder, source = find_mnist(root, download=download)
        except FileNotFoundError as exc:
            if data == "mnist":
                raise
            folder, note = None, f"real MNIST unavailable, used synthetic digits: {exc}"
        if folder is not None:
            out = {s: load_mnist(folder, s) for s in ("train", "test")}
            sizes = {"train": train_size, "test": test_size}
            for s, (im, _) in out.items():
                if sizes[s] > len(im):
                    raise ValueError(
                        f"--{s}-size {sizes[s]} exceeds the {len(im)} MNIST {s} images in {folder}"
                    )
            sets = {s: (im[: sizes[s]], lb[: sizes[s]]) for s, (im, lb) in out.items()}
            info = {"data": "mnist", "data_dir": os.path.abspath(folder), "data_source": source}
            return sets, {**info, "train_size": train_size, "test_size": test_size}
    cache = synthetic_dir(root, seed, train_size, test_size)
    sets = {
        "train": load_synthetic(root, "train", train_size, seed, cache),
        "test": load_synthetic(root, "test", test_size, seed, cache),
    }
    info = {"data": "synthetic", "data_dir": os.path.abspath(cache), "data_source": "generated"}
    info.update(train_size=train_size, test_size=test_size)
    if note:
        info["data_note"] = note
    return sets, info


# ------------------------------------------------------------------------------ scale transform
def scale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Scale a `uint8[28, 28]` image by `scale` about its centre, padding with 0 or cropping
    (centred) back to 28x28. The scaled size is round(28 * scale); scale 1 returns a copy."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    h, w = image.shape
    size = max(1, int(round(IMAGE_SIZE * scale)))
    if size == h == w:
        return image.copy()
    interp = cv2.INTER_AREA if size < h else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interp)
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), image.dtype)
    if size <= IMAGE_SIZE:
        o = (IMAGE_SIZE - size) // 2
        out[o : o + size, o : o + size] = resized
    else:
        o = (size - IMAGE_SIZE) // 2
        out[:] = resized[o : o + IMAGE_SIZE, o : o + IMAGE_SIZE]
    return out


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """`uint8[28, 28]` -> normalised `float32[1, 28, 28]`."""
    x = torch.from_numpy(image.astype(np.float32) / 255.0)
    return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(0)


class ScaledDigits(Dataset):
    """Digits scaled by a random factor in [scale_min, scale_max] (fresh on every access, from the
    torch RNG), or by the fixed `scale` when given. Items: (float32[1, 28, 28], int64 label)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        scale_min: float = 0.5,
        scale_max: float = 1.5,
        scale: float | None = None,
    ):
        if not 0 < scale_min <= scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
        self.images, self.labels = images, labels
        self.scale_min, self.scale_max, self.scale = scale_min, scale_max, scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.scale is not None:
            s = self.scale
        else:
            s = self.scale_min + (self.scale_max - self.scale_min) * torch.rand(()).item()
        return to_tensor(scale_image(self.images[i], s)), int(self.labels[i])


def fixed_scales(n: int, scale_min: float, scale_max: float, seed: int) -> np.ndarray:
    """A reproducible scale per image for validation during training."""
    return np.random.default_rng([seed, 7]).uniform(scale_min, scale_max, size=n)


def scaled_tensor(images: np.ndarray, scales: Iterable[float]) -> torch.Tensor:
    """Stack `images` scaled by `scales` (one per image) into `float32[N, 1, 28, 28]`."""
    return torch.stack([to_tensor(scale_image(im, s)) for im, s in zip(images, scales)])
