"""Predictor preprocessing, drawing and COCO-style records (with a stand-in model)."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from torch import nn

from detection.engine.predictor import Predictor, detections_to_coco, draw_detections
from detection.structures.bounding_box import BoxList


class _Boxes(nn.Module):
    """Stand-in detector: one box covering the middle of the input, full-probability mask."""

    def forward(self, images):
        out = []
        for h, w in images.image_sizes:
            bl = BoxList(torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [0, 0, 2, 2]]), (w, h))
            bl.add_field("scores", torch.tensor([0.9, 0.2]))
            bl.add_field("labels", torch.tensor([2, 1]))
            bl.add_field("mask", torch.ones(2, 1, 28, 28))
            out.append(bl)
        return out


def _half_size(image, target):
    """Stand-in test transform: half size, BGR minus 1."""
    x = torch.from_numpy(image[::2, ::2].copy()).permute(2, 0, 1).float() - 1.0
    return x, target


def test_predictor_returns_original_coordinates_and_pasted_masks():
    pred = Predictor(_Boxes(), torch.device("cpu"), transform=_half_size, size_divisible=16)
    image = np.full((80, 120, 3), 7, np.uint8)
    x = pred.preprocess(image)
    assert x.shape == (3, 40, 60) and torch.all(x == 6.0)
    p = pred(image)
    assert p.size == (120, 80)
    assert p.bbox[0].tolist() == pytest.approx([30.0, 20.0, 90.0, 60.0], abs=1e-4)
    masks = p.get_field("mask")
    assert masks.shape == (2, 1, 80, 120) and masks.dtype == torch.bool
    assert masks[0, 0, 40, 60] and not masks[0, 0, 5, 5]
    with pytest.raises(ValueError, match="HxWx3"):
        pred(np.zeros((8, 8), np.uint8))


def test_draw_and_records():
    image = np.zeros((40, 60, 3), np.uint8)
    bl = BoxList(torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 5.0, 5.0]]), (60, 40))
    bl.add_field("scores", torch.tensor([0.8, 0.1]))
    bl.add_field("labels", torch.tensor([1, 2]))
    masks = torch.zeros(2, 1, 40, 60, dtype=torch.bool)
    masks[0, 0, 12:28, 12:28] = True
    masks[1, 0, 0:5, 0:5] = True
    bl.add_field("mask", masks)
    drawn = draw_detections(image, bl, {1: "circle", 2: "square"}, score_threshold=0.5)
    assert drawn.shape == image.shape and image.sum() == 0, "the input must not be modified"
    assert drawn[20, 20].sum() > 0, "mask overlay missing"
    assert drawn[2, 2].sum() == 0, "a detection under the threshold was drawn"
    recs = detections_to_coco(
        bl, image_id=5, label_to_category_id={1: 11, 2: 12}, score_threshold=0.5
    )
    assert len(recs) == 1
    r = recs[0]
    assert r["image_id"] == 5 and r["category_id"] == 11 and r["bbox"] == [10.0, 10.0, 20.0, 20.0]
    assert r["area"] == 16 * 16
    decoded = mask_util.decode(
        {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
    )
    assert np.array_equal(decoded.astype(bool), masks[0, 0].numpy())
