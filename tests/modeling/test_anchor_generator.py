"""Anchors against hand-derived coordinates."""

import math

import torch

from detection.modeling.rpn.anchor_generator import AnchorGenerator, generate_cell_anchors


def test_cell_anchors_hand_derived():
    a = generate_cell_anchors(16, (32,), (0.5, 1.0, 2.0))
    # ratio r = h / w, area 32^2, centre (8, 8)
    w05, h05 = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    expected = torch.tensor(
        [
            [8 - w05 / 2, 8 - h05 / 2, 8 + w05 / 2, 8 + h05 / 2],
            [-8.0, -8.0, 24.0, 24.0],
            [8 - h05 / 2, 8 - w05 / 2, 8 + h05 / 2, 8 + w05 / 2],
        ]
    )
    torch.testing.assert_close(a, expected)
    areas = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    torch.testing.assert_close(areas, torch.full((3,), 1024.0))


def test_grid_order_and_visibility():
    gen = AnchorGenerator(sizes=(32, 64), aspect_ratios=(1.0,), stride=16, straddle_thresh=0)
    assert gen.num_anchors_per_location() == 2
    feat = torch.zeros(1, 1, 2, 3)
    (anchors,) = gen([(32, 48)], feat)
    assert anchors.size == (48, 32)
    assert len(anchors) == 2 * 3 * 2
    b = anchors.bbox
    # (y, x, a) order: index (y*W + x)*A + a
    torch.testing.assert_close(b[0], torch.tensor([-8.0, -8.0, 24.0, 24.0]))
    torch.testing.assert_close(b[1], torch.tensor([-24.0, -24.0, 40.0, 40.0]))
    torch.testing.assert_close(b[(1 * 3 + 2) * 2], torch.tensor([24.0, 8.0, 56.0, 40.0]))
    vis = anchors.get_field("visibility")
    # a 32x32 anchor centred at (8, 8) starts at -8 < 0: straddles the border
    assert not bool(vis[0])
    inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] < 48) & (b[:, 3] < 32)
    assert torch.equal(vis, inside)
    gen_all = AnchorGenerator(sizes=(32,), aspect_ratios=(1.0,), stride=16, straddle_thresh=-1)
    (anchors,) = gen_all([(32, 48)], feat)
    assert bool(anchors.get_field("visibility").all())
