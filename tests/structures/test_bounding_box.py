"""BoxList and boxlist_ops against hand-derived values and torchvision.ops."""

import pytest
import torch
import torchvision

from detection.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, BoxList
from detection.structures.boxlist_ops import (
    boxlist_iou,
    boxlist_nms,
    cat_boxlist,
    remove_small_boxes,
)
from detection.structures.segmentation_mask import SegmentationMask


def _random_boxes(n, w, h, gen):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.5, h * 0.5]) + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_convert_roundtrip_and_area():
    gen = torch.Generator().manual_seed(1)
    b = BoxList(_random_boxes(20, 100, 80, gen), (100, 80))
    xywh = b.convert("xywh")
    assert torch.allclose(xywh.bbox[:, 2], b.bbox[:, 2] - b.bbox[:, 0])  # no +1
    assert torch.allclose(xywh.convert("xyxy").bbox, b.bbox, atol=1e-5)
    assert torch.allclose(xywh.area(), b.area(), atol=1e-4)
    assert BoxList(torch.tensor([[1.0, 2.0, 4.0, 7.0]]), (10, 10)).area().item() == 15.0


def test_iou_hand_value_and_torchvision():
    a = BoxList(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), (20, 20))
    b = BoxList(torch.tensor([[5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 20.0, 20.0]]), (20, 20))
    iou = boxlist_iou(a, b)
    # overlap 5*5 = 25, union 100 + 100 - 25 = 175
    assert iou[0, 0].item() == pytest.approx(25.0 / 175.0)
    assert iou[0, 1].item() == 0.0  # a degenerate box gives 0, not NaN
    gen = torch.Generator().manual_seed(2)
    x = BoxList(_random_boxes(30, 64, 48, gen), (64, 48))
    y = BoxList(_random_boxes(17, 64, 48, gen), (64, 48))
    assert torch.allclose(boxlist_iou(x, y), torchvision.ops.box_iou(x.bbox, y.bbox), atol=1e-6)
    with pytest.raises(ValueError, match="image size"):
        boxlist_iou(x, BoxList(y.bbox, (10, 10)))


def test_transpose_resize_crop_clip():
    b = BoxList(torch.tensor([[1.0, 2.0, 5.0, 9.0]]), (10, 20))
    assert b.transpose(FLIP_LEFT_RIGHT).bbox.tolist() == [[5.0, 2.0, 9.0, 9.0]]
    assert b.transpose(FLIP_TOP_BOTTOM).bbox.tolist() == [[1.0, 11.0, 5.0, 18.0]]
    r = b.resize((20, 10))  # x * 2, y * 0.5
    assert r.size == (20, 10) and r.bbox.tolist() == [[2.0, 1.0, 10.0, 4.5]]
    c = b.crop((2, 3, 4, 13))
    assert c.size == (2, 10) and c.bbox.tolist() == [[0.0, 0.0, 2.0, 6.0]]
    bb = BoxList(torch.tensor([[-3.0, -1.0, 4.0, 30.0], [12.0, 1.0, 15.0, 3.0]]), (10, 20))
    bb.add_field("labels", torch.tensor([1, 2]))
    clipped = bb.clip_to_image(remove_empty=True)
    assert clipped.bbox.tolist() == [
        [0.0, 0.0, 4.0, 20.0]
    ]  # the second box collapsed: x1 = x2 = 10
    assert clipped.get_field("labels").tolist() == [1]
    # xywh boxes keep their mode through the operations
    w = b.convert("xywh")
    assert w.transpose(FLIP_LEFT_RIGHT).mode == "xywh"
    assert torch.allclose(
        w.transpose(FLIP_LEFT_RIGHT).convert("xyxy").bbox, torch.tensor([[5.0, 2.0, 9.0, 9.0]])
    )


def test_fields_follow_indexing_and_geometry():
    b = BoxList(
        torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 6.0], [1.0, 1.0, 3.0, 9.0]]), (10, 10)
    )
    b.add_field("labels", torch.tensor([3, 4, 5]))
    polys = [[[0, 0, 4, 0, 4, 4, 0, 4]], [[2, 2, 8, 2, 8, 6, 2, 6]], [[1, 1, 3, 1, 3, 9, 1, 9]]]
    b.add_field("masks", SegmentationMask(polys, (10, 10)))
    assert set(b.fields()) == {"labels", "masks"} and b.has_field("labels")
    sub = b[torch.tensor([True, False, True])]
    assert len(sub) == 2 and sub.get_field("labels").tolist() == [3, 5]
    assert len(sub.get_field("masks")) == 2
    assert sub.get_field("masks").polygons[1][0].tolist() == [1, 1, 3, 1, 3, 9, 1, 9]
    one = b[1]
    assert len(one) == 1 and one.get_field("labels").tolist() == [4]
    flipped = b.transpose(FLIP_LEFT_RIGHT)
    m = flipped.get_field("masks").get_mask_tensor()
    for i in range(3):  # every flipped mask fills exactly its flipped box
        x1, y1, x2, y2 = flipped.bbox[i].int().tolist()
        assert m[i, y1:y2, x1:x2].all() and m[i].sum() == (x2 - x1) * (y2 - y1)
    only = b.copy_with_fields("labels")
    assert only.fields() == ["labels"]
    with pytest.raises(KeyError):
        b.copy_with_fields(["scores"])
    with pytest.raises(KeyError, match="scores"):
        b.get_field("scores")


def test_cat_and_remove_small():
    a = BoxList(torch.tensor([[0.0, 0.0, 1.0, 5.0]]), (10, 10))
    a.add_field("scores", torch.tensor([0.5]))
    b = BoxList(torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 3.0, 4.0]]), (10, 10))
    b.add_field("scores", torch.tensor([0.7, 0.1]))
    c = cat_boxlist([a, b])
    assert len(c) == 3 and c.get_field("scores").tolist() == pytest.approx([0.5, 0.7, 0.1])
    kept = remove_small_boxes(c, 2)
    assert kept.get_field("scores").tolist() == pytest.approx([0.7, 0.1])
    with pytest.raises(ValueError):
        cat_boxlist([a, BoxList(torch.zeros(0, 4), (5, 5))])


def test_bad_input_errors():
    with pytest.raises(ValueError, match="bbox"):
        BoxList(torch.zeros(3, 5), (10, 10))
    with pytest.raises(ValueError, match="mode"):
        BoxList(torch.zeros(3, 4), (10, 10), mode="cxcywh")
    empty = BoxList([], (4, 4))
    assert len(empty) == 0 and empty.bbox.shape == (0, 4)


def test_to_device_keeps_fields():
    b = BoxList(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (10, 10))
    b.add_field("labels", torch.tensor([1]))
    b.add_field("masks", SegmentationMask(torch.ones(1, 10, 10), (10, 10), mode="mask"))
    moved = b.to("cpu")
    assert moved.fields() == ["labels", "masks"] and moved.bbox.device.type == "cpu"


def test_boxlist_nms_matches_torchvision():
    layers = pytest.importorskip("detection.layers")
    if not hasattr(layers, "nms"):
        pytest.skip("detection.layers.nms not available yet")
    from detection import _ext

    if not _ext.HAS_OPS:
        pytest.skip("compiled ops not built")
    gen = torch.Generator().manual_seed(3)
    b = BoxList(_random_boxes(50, 64, 64, gen), (64, 64))
    scores = torch.rand(50, generator=gen)
    b.add_field("scores", scores)
    out = boxlist_nms(b, 0.5, max_proposals=10)
    ref = torchvision.ops.nms(b.bbox, scores, 0.5)[:10]
    assert torch.equal(out.bbox, b.bbox[ref])
