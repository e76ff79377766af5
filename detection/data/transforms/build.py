"""`build_transforms(cfg, is_train)`: the INPUT.* config mapped to a transform pipeline."""

from __future__ import annotations

from detection.data.transforms.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
)


def build_transforms(cfg, is_train: bool = True) -> Compose:
    """Resize -> (train: flip, colour jitter) -> ToTensor -> Normalize, from INPUT.*."""
    inp = cfg.INPUT
    if is_train:
        min_size, max_size = inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN
        flip = inp.HORIZONTAL_FLIP_PROB_TRAIN
    else:
        min_size, max_size, flip = inp.MIN_SIZE_TEST, inp.MAX_SIZE_TEST, 0.0
    if isinstance(min_size, int):
        min_size = (min_size,)
    if len(min_size) == 0 or min(min_size) <= 0:
        key = "INPUT.MIN_SIZE_TRAIN" if is_train else "INPUT.MIN_SIZE_TEST"
        raise ValueError(f"{key} must hold positive sizes, got {min_size}")
    if max_size <= 0:
        key = "INPUT.MAX_SIZE_TRAIN" if is_train else "INPUT.MAX_SIZE_TEST"
        raise ValueError(f"{key} must be positive, got {max_size}")
    if not 0.0 <= flip <= 1.0:
        raise ValueError(f"INPUT.HORIZONTAL_FLIP_PROB_TRAIN must be in [0, 1], got {flip}")
    steps = [Resize(tuple(min_size), max_size)]
    if flip > 0:
        steps.append(RandomHorizontalFlip(flip))
    jitter = (inp.BRIGHTNESS, inp.CONTRAST, inp.SATURATION, inp.HUE)
    if is_train and any(v > 0 for v in jitter):
        steps.insert(0, ColorJitter(*jitter))
    steps += [ToTensor(), Normalize(inp.PIXEL_MEAN, inp.PIXEL_STD, inp.TO_BGR255)]
    return Compose(steps)
