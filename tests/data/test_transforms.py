"""Transforms keep image, boxes and masks aligned; tensor conversion and normalisation."""

import random

import numpy as np
import pytest
import torch

from detection.config import cfg as default_cfg
from detection.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    build_transforms,
)
from detection.structures.bounding_box import BoxList
from detection.structures.segmentation_mask import SegmentationMask

_POLYS = [
    [[4.3, 5.1, 30.7, 6.2, 18.2, 27.9]],  # triangle
    [[36.0, 8.0, 58.3, 8.0, 58.3, 30.3, 36.0, 30.3]],  # rectangle (no edge on a pixel centre)
    [[10.0, 30.0, 24.0, 30.0, 24.0, 44.0, 10.0, 44.0], [28, 34, 34, 34, 34, 42]],  # two parts
]
_COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]  # BGR: red, green, blue


def _scene(w=64, h=48):
    """An image whose coloured regions are exactly the rasterised polygons, and its target."""
    masks = SegmentationMask(_POLYS, (w, h))
    raster = masks.get_mask_tensor().numpy().astype(bool)
    img = np.full((h, w, 3), 128, np.uint8)
    for m, c in zip(raster, _COLOURS):
        img[m] = c
    boxes = []
    for inst in _POLYS:
        pts = np.concatenate([np.asarray(p, np.float32).reshape(-1, 2) for p in inst])
        boxes.append([*pts.min(0), *pts.max(0)])  # the polygon's extent
    target = BoxList(torch.tensor(boxes, dtype=torch.float32), (w, h))
    target.add_field("masks", masks)
    target.add_field("labels", torch.tensor([1, 2, 3]))
    return img, target


def _colour_masks(img):
    return [np.all(np.abs(img.astype(int) - c) < 40, axis=2) for c in _COLOURS]


def _check_aligned(img, target, exact, box_tol=1.0):
    """Masks rasterised after the transform equal the transformed image's coloured regions and
    every box is within `box_tol` px of the tight box of its mask."""
    h, w = img.shape[:2]
    assert target.size == (w, h)
    raster = target.get_field("masks").get_mask_tensor().numpy().astype(bool)
    for i, seen in enumerate(_colour_masks(img)):
        diff = (raster[i] != seen).sum()
        if exact:
            assert diff <= 2, f"instance {i}: {diff} pixels differ"
        else:  # bilinear resampling blurs the edges: only boundary pixels may differ
            assert diff <= 0.2 * seen.sum() + 4, f"instance {i}: {diff} of {seen.sum()} differ"
            inter = (raster[i] & seen).sum() / max((raster[i] | seen).sum(), 1)
            assert inter > 0.8
        ys, xs = np.nonzero(raster[i])
        tight = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert torch.allclose(target.bbox[i], tight, atol=box_tol), (target.bbox[i], tight)


def test_flip_keeps_alignment_exactly():
    img, target = _scene()
    _check_aligned(img, target, exact=True)
    out_img, out_target = RandomHorizontalFlip(1.0)(img, target)
    assert np.array_equal(out_img, img[:, ::-1])
    _check_aligned(out_img, out_target, exact=True)
    same_img, same_target = RandomHorizontalFlip(0.0)(img, target)
    assert same_img is img and same_target is target


@pytest.mark.parametrize("min_size,max_size", [(96, 1000), (30, 1000), (200, 160)])
def test_resize_keeps_alignment(min_size, max_size):
    img, target = _scene()
    out_img, out_target = Resize(min_size, max_size)(img, target)
    h, w = out_img.shape[:2]
    assert max(h, w) <= max_size + 1
    if 64 / 48 * min_size <= max_size:
        assert min(h, w) == min_size
    _check_aligned(out_img, out_target, exact=False)


def test_resize_then_flip_and_binary_masks():
    img, target = _scene()
    binary = target.copy_with_fields(["labels"])
    binary.add_field("masks", target.get_field("masks").convert("mask"))
    t = Compose([Resize(72, 1000), RandomHorizontalFlip(1.0)])
    for tgt, box_tol in ((target, 1.0), (binary, 1.0 + 1.5)):  # nearest upsampling by 1.5
        out_img, out_target = t(img, tgt)
        _check_aligned(out_img, out_target, exact=False, box_tol=box_tol)


def test_resize_sizes():
    r = Resize((100,), 150)
    assert r.get_size((200, 100)) == (150, 75)  # long side capped
    assert r.get_size((100, 200)) == (75, 150)
    assert Resize(50, 1000).get_size((80, 40)) == (100, 50)
    random.seed(0)
    sizes = {Resize((10, 20, 30), 1000).get_size((40, 40))[0] for _ in range(50)}
    assert sizes == {10, 20, 30}
    with pytest.raises(ValueError, match="min_size"):
        Resize((), 10)


def test_to_tensor_and_normalize():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    t, _ = ToTensor()(img, None)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[:, 0, 0].tolist() == [10.0, 20.0, 30.0]  # stays BGR 0-255
    bgr, _ = Normalize((1.0, 2.0, 3.0), (1.0, 2.0, 3.0), to_bgr255=True)(t)
    assert bgr[:, 1, 2].tolist() == pytest.approx([9.0, 9.0, 9.0])
    rgb, _ = Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), to_bgr255=False)(t)
    assert rgb[:, 0, 0].tolist() == pytest.approx([30 / 255, 20 / 255, 10 / 255])


def test_color_jitter_changes_colours_only():
    img, target = _scene()
    random.seed(1)
    out, out_target = ColorJitter(0.4, 0.4, 0.4, 0.1)(img, target)
    assert out.shape == img.shape and out.dtype == np.uint8 and out_target is target
    assert not np.array_equal(out, img)
    with pytest.raises(ValueError, match="hue"):
        ColorJitter(hue=0.7)


def test_build_transforms_from_config():
    cfg = default_cfg.clone()
    cfg.INPUT.MIN_SIZE_TRAIN = (40,)
    cfg.INPUT.MAX_SIZE_TRAIN = 100
    cfg.INPUT.MIN_SIZE_TEST = 24
    cfg.INPUT.MAX_SIZE_TEST = 100
    img, target = _scene()
    train = build_transforms(cfg, is_train=True)
    x, t = train(img, target)
    assert x.shape[0] == 3 and min(x.shape[1:]) == 40 and t.size == (x.shape[2], x.shape[1])
    test = build_transforms(cfg, is_train=False)
    assert not any(isinstance(s, RandomHorizontalFlip) for s in test.transforms)
    x, t = test(img, target)
    assert min(x.shape[1:]) == 24
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(3, 1, 1)
    raw = torch.from_numpy(img.transpose(2, 0, 1)).float()
    x_full, _ = Compose(test.transforms[1:])(img, target)  # skip the resize
    assert torch.allclose(x_full, raw - mean)
    cfg.INPUT.MIN_SIZE_TRAIN = (0,)
    with pytest.raises(ValueError, match="INPUT.MIN_SIZE_TRAIN"):
        build_transforms(cfg, is_train=True)
