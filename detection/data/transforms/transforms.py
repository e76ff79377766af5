"""Joint image/target transforms. Every geometric transform moves boxes and masks with the image.

Images are OpenCV `np.ndarray[H, W, 3]` uint8 BGR until `ToTensor`, which gives a
`Tensor[3, H, W]` float32 BGR in 0-255; `Normalize` subtracts the mean and divides by the std
(and, with `to_bgr255=False`, first turns the image into RGB 0-1).
"""

from __future__ import annotations

import random
from typing import Callable, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from detection.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList


class Compose:
    """Apply transforms in order to `(image, target)`."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, target: Optional[BoxList] = None):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def _image_wh(image) -> Tuple[int, int]:
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return int(image.shape[1]), int(image.shape[0])


class Resize:
    """Resize so the shorter side is `min_size` (one of a tuple, at random) and the longer
    side at most `max_size`; bilinear for the image, boxes and masks scaled to the new `(w, h)`."""

    def __init__(self, min_size: Union[int, Sequence[int]], max_size: int) -> None:
        if isinstance(min_size, int):
            min_size = (min_size,)
        if len(min_size) == 0 or min(min_size) <= 0 or max_size <= 0:
            raise ValueError(
                f"Resize needs positive min_size and max_size, got {min_size}, {max_size}"
            )
        self.min_size = tuple(int(s) for s in min_size)
        self.max_size = int(max_size)

    def get_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """(new_w, new_h) for an image of (w, h)."""
        w, h = image_size
        size = float(random.choice(self.min_size))
        short, long = float(min(w, h)), float(max(w, h))
        if long / short * size > self.max_size:
            size = self.max_size * short / long
        if w <= h:
            return int(round(size)), max(int(round(size * h / w)), 1)
        return max(int(round(size * w / h)), 1), int(round(size))

    def __call__(self, image, target: Optional[BoxList] = None):
        new_w, new_h = self.get_size(_image_wh(image))
        if isinstance(image, torch.Tensor):
            image = torch.nn.functional.interpolate(
                image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False
            )[0]
        else:
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if target is not None:
            target = target.resize((new_w, new_h))
        return image, target

    def __repr__(self) -> str:
        return f"Resize(min_size={self.min_size}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror image, boxes and masks left-right with probability `prob`."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, image, target: Optional[BoxList] = None):
        if random.random() < self.prob:
            if isinstance(image, torch.Tensor):
                image = image.flip(-1)
            else:
                image = np.ascontiguousarray(image[:, ::-1])
            if target is not None:
                target = target.transpose(FLIP_LEFT_RIGHT)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


class ColorJitter:
    """Random brightness/contrast/saturation/hue on a BGR uint8 image (geometry unchanged).

    Each strength s draws a factor in [max(0, 1 - s), 1 + s] (hue: a shift in [-s, s] of a turn,
    s <= 0.5); the four are applied in random order.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
    ) -> None:
        for name, v in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
            ("hue", hue),
        ):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if hue > 0.5:
            raise ValueError(f"hue must be <= 0.5, got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )

    def __call__(self, image, target: Optional[BoxList] = None):
        if isinstance(image, torch.Tensor):
            raise TypeError("ColorJitter expects the uint8 BGR array (put it before ToTensor)")
        img = image.astype(np.float32)
        ops = [self._brightness, self._contrast, self._saturation, self._hue]
        random.shuffle(ops)
        for op in ops:
            img = op(img)
        return np.clip(img, 0, 255).astype(np.uint8), target

    @staticmethod
    def _factor(s: float) -> float:
        return random.uniform(max(0.0, 1 - s), 1 + s)

    def _brightness(self, img):
        return img * self._factor(self.brightness) if self.brightness > 0 else img

    def _contrast(self, img):
        if self.contrast <= 0:
            return img
        mean = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).mean()
        return (img - mean) * self._factor(self.contrast) + mean

    def _saturation(self, img):
        if self.saturation <= 0:
            return img
        gray = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
        gray = gray.astype(np.float32)[..., None]
        return (img - gray) * self._factor(self.saturation) + gray

    def _hue(self, img):
        if self.hue <= 0:
            return img
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV_FULL)
        shift = int(round(random.uniform(-self.hue, self.hue) * 255))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue})"
        )


class ToTensor:
    """`np.ndarray[H, W, 3]` uint8 BGR -> `Tensor[3, H, W]` float32 BGR in 0-255."""

    def __call__(self, image, target: Optional[BoxList] = None):
        if isinstance(image, torch.Tensor):
            return image.float(), target
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(), target

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """`(x - mean) / std` per channel on a BGR 0-255 tensor (from ToTensor).

    With `to_bgr255=False` the image is first converted to RGB 0-1 and mean/std are in that space.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_bgr255: bool = True) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.to_bgr255 = to_bgr255

    def __call__(self, image: torch.Tensor, target: Optional[BoxList] = None):
        if not self.to_bgr255:
            image = image.flip(0) / 255.0
        return (image - self.mean) / self.std, target

    def __repr__(self) -> str:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return f"Normalize(mean={mean}, std={std}, to_bgr255={self.to_bgr255})"
