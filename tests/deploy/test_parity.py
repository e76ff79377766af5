"""`detection.deploy.parity.ParityReport`: the worst case it reports is the one put in."""

import torch

from detection.deploy.parity import ParityReport, mask_iou
from detection.structures.bounding_box import BoxList


def _prediction(boxes, scores, labels, masks) -> BoxList:
    p = BoxList(torch.tensor(boxes, dtype=torch.float32), (40, 30), mode="xyxy")
    p.add_field("scores", torch.tensor(scores))
    p.add_field("labels", torch.tensor(labels))
    p.add_field("mask", masks)
    return p


def test_report_finds_the_worst_image_and_value():
    masks = torch.zeros(2, 1, 30, 40, dtype=torch.bool)
    masks[0, 0, 5:15, 5:15] = True
    masks[1, 0, 10:20, 20:30] = True
    a = _prediction([[5, 5, 15, 15], [20, 10, 30, 20]], [0.9, 0.8], [1, 2], masks)
    report = ParityReport()
    report.add("same", a, a)
    assert report.passes() and report.box_rel[0] == 0 and report.mask_iou[0] == 1
    moved = masks.clone()
    moved[1, 0, 19] = False  # 10 of 100 pixels off: IoU 0.9
    b = _prediction([[5, 5, 15, 15], [20, 10, 30.1, 20]], [0.9, 0.8 + 3e-4], [1, 2], moved)
    report.add("moved", a, b)
    assert abs(report.box_rel[0] - 0.1 / 30.1) < 1e-6 and report.box_rel[1] == "moved"
    assert abs(report.score_abs[0] - 3e-4) < 1e-6
    assert abs(report.mask_iou[0] - 0.9) < 1e-9 and report.mask_iou[1] == "moved"
    assert not report.passes()
    report.add(
        "labels", a, _prediction([[5, 5, 15, 15], [20, 10, 30, 20]], [0.9, 0.8], [1, 3], masks)
    )
    report.add("count", a, a[torch.tensor([0])])
    assert report.label_mismatch == [("labels", 1)] and report.count_mismatch == [("count", 2, 1)]
    assert report.images == 4 and report.detections == 4


def test_mask_iou_counts_two_empty_masks_as_equal():
    empty = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    assert mask_iou(empty, empty).item() == 1.0
