"""Joint image/target transforms (boxes and masks follow every geometric change)."""

from detection.data.transforms.build import build_transforms
from detection.data.transforms.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
)

__all__ = [
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
    "build_transforms",
]
