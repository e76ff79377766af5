"""SegmentationMask: geometry keeps polygons and their rasters aligned; crop_and_resize."""

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from detection.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM
from detection.structures.segmentation_mask import SegmentationMask


def _random_polys(n, w, h, seed):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
        rad = np.full(6, rng.uniform(0.15, 0.35) * min(w, h))  # convex hexagon
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        out.append([pts.reshape(-1).tolist()])
    return out


def _near_boundary(ref, r):
    """Pixels within `r` (chessboard distance) of the boundary of binary mask `ref`."""
    x = ref.float()[None, None]
    k = 2 * r + 1
    dil = torch.nn.functional.max_pool2d(x, k, 1, r)
    ero = -torch.nn.functional.max_pool2d(-x, k, 1, r)
    return (dil - ero)[0, 0] > 0


def _aligned(a, b, r):
    """a and b differ only next to b's boundary (a shift or wrong axis would fail)."""
    return bool(((a != b) <= _near_boundary(b, r)).all())


def _iou(a, b):
    a, b = a.bool(), b.bool()
    return (a & b).sum().item() / max((a | b).sum().item(), 1)


def test_flip_commutes_with_rasterising_exactly_on_integer_polygons():
    polys = [[[2, 3, 9, 3, 9, 11, 2, 11]], [[10, 1, 17, 1, 17, 6, 12, 6, 12, 14, 10, 14]]]
    m = SegmentationMask(polys, (20, 16))
    raster = m.get_mask_tensor()
    assert raster.shape == (2, 16, 20)
    assert raster[0].sum() == 7 * 8  # continuous coordinates: area = (x2 - x1) * (y2 - y1)
    assert raster[0, 3:11, 2:9].all()
    assert raster[1].sum() == 7 * 5 + 2 * 8
    assert torch.equal(m.transpose(FLIP_LEFT_RIGHT).get_mask_tensor(), raster.flip(2))
    assert torch.equal(m.transpose(FLIP_TOP_BOTTOM).get_mask_tensor(), raster.flip(1))
    # slanted edges: pixels whose centre lies on an edge may go either way, nothing else
    tri = SegmentationMask([[[10, 1, 17, 6, 12, 14]]], (20, 16))
    diff = tri.transpose(FLIP_LEFT_RIGHT).get_mask_tensor() != tri.get_mask_tensor().flip(2)
    assert diff.sum() <= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flip_and_resize_follow_rasters_random_polygons(seed):
    m = SegmentationMask(_random_polys(4, 60, 40, seed), (60, 40))
    raster = m.get_mask_tensor()
    binary = SegmentationMask(raster, (60, 40), mode="mask")
    for method, dim in ((FLIP_LEFT_RIGHT, 2), (FLIP_TOP_BOTTOM, 1)):
        a = m.transpose(method).get_mask_tensor()
        b = binary.transpose(method).get_mask_tensor()
        assert torch.equal(b, raster.flip(dim))
        for i in range(len(m)):
            # pycocotools samples edges on a 1/5-pixel grid: boundary pixels may differ
            assert _aligned(a[i], b[i], 1)
            assert _iou(a[i], b[i]) > 0.9
    up_poly = m.resize((120, 80)).get_mask_tensor()
    up_mask = binary.resize((120, 80)).get_mask_tensor()
    assert up_poly.shape == up_mask.shape == (4, 80, 120)
    for i in range(len(m)):
        # nearest upsampling of the coarse raster vs the exact raster of the scaled polygon
        assert _aligned(up_poly[i], up_mask[i], 2)
        assert _iou(up_poly[i], up_mask[i]) > 0.8


def test_crop_both_modes():
    polys = [[[2, 3, 9, 3, 9, 11, 2, 11]]]
    m = SegmentationMask(polys, (20, 16))
    binary = m.convert("mask")
    box = (1, 2, 11, 14)
    cp, cm = m.crop(box), binary.crop(box)
    assert cp.size == cm.size == (10, 12)
    assert torch.equal(cp.get_mask_tensor(), cm.get_mask_tensor())
    # a box leaving the image pads with zeros
    out = binary.crop((-4, -4, 6, 6)).get_mask_tensor()[0]
    assert out.shape == (10, 10) and out[:7].sum() == 0 and out[7:, 6:].sum() == 3 * 4


def test_crop_and_resize_poly_and_mask_agree():
    polys = [[[4, 4, 20, 4, 20, 12, 4, 12]], [[10, 10, 30, 10, 20, 26]]]
    m = SegmentationMask(polys, (32, 32))
    boxes = torch.tensor([[4.0, 4.0, 20.0, 12.0], [10.0, 10.0, 30.0, 26.0]])
    t = m.crop_and_resize(boxes, 8)
    assert t.shape == (2, 8, 8) and t.dtype == torch.float32
    assert set(t.unique().tolist()) <= {0.0, 1.0}
    assert t[0].all()  # the box is exactly the rectangle
    tm = m.convert("mask").crop_and_resize(boxes, 8)
    assert _iou(t[1], tm[1]) > 0.8
    # the triangle's apex is at the bottom centre, the top row is full
    assert t[1, 0].all() and t[1, -1, 0] == 0 and t[1, -1, -1] == 0
    # a box twice the polygon size: the instance fills the top-left quarter
    q = m[0:1].crop_and_resize(torch.tensor([[4.0, 4.0, 36.0, 20.0]]), 8)[0]
    assert q[:4, :4].all() and q.sum() == 16
    assert m[[]].crop_and_resize(torch.zeros(0, 4), 8).shape == (0, 8, 8)
    with pytest.raises(ValueError, match="boxes"):
        m.crop_and_resize(boxes[:1], 8)


def test_rle_and_index_modes():
    raster = SegmentationMask(_random_polys(3, 30, 20, 5), (30, 20)).get_mask_tensor()
    rles = [mask_utils.encode(np.asfortranarray(r.numpy())) for r in raster]
    m = SegmentationMask(rles, (30, 20), mode="mask")
    assert torch.equal(m.get_mask_tensor(), raster)
    assert len(m[torch.tensor([True, False, True])]) == 2
    assert torch.equal(m[torch.tensor([2, 0])].get_mask_tensor(), raster[[2, 0]])
    assert torch.equal(m[1:].get_mask_tensor(), raster[1:])
    with pytest.raises(ValueError, match="masks must be"):
        SegmentationMask(torch.zeros(2, 5, 5), (30, 20), mode="mask")
    with pytest.raises(ValueError, match="polygon"):
        SegmentationMask([[[0, 0, 1, 1]]], (30, 20))


@pytest.mark.cuda
def test_cuda_devices_follow():
    from detection.structures.bounding_box import BoxList

    polys = [[[4, 4, 20, 4, 20, 12, 4, 12]]]
    boxes = torch.tensor([[4.0, 4.0, 20.0, 12.0]])
    b = BoxList(boxes, (32, 32))
    b.add_field("masks", SegmentationMask(polys, (32, 32)).convert("mask"))
    g = b.to("cuda")
    assert g.bbox.is_cuda and g.get_field("masks").masks.is_cuda
    sub = g[torch.tensor([True], device="cuda")]
    t = sub.get_field("masks").crop_and_resize(sub.bbox, 8)
    assert t.is_cuda and t.all()
    poly = SegmentationMask(polys, (32, 32))
    assert torch.equal(poly.crop_and_resize(boxes.cuda(), 8).cpu(), t.cpu())
