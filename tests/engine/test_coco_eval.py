"""COCO evaluation on a tiny hand-made dataset: perfect predictions give AP 1, shifted boxes less.

Expected values follow from COCOeval's definition: AP averages over the IoU thresholds
0.50:0.05:0.95; a detection matches at a threshold t when IoU >= t, so a single-detection image
set scores 1 at every threshold the IoU reaches and 0 elsewhere.
"""

import json

import numpy as np
from pycocotools.coco import COCO
import pycocotools.mask as mask_util
import pytest
import torch

from detection.engine.coco_eval import (
    METRIC_NAMES,
    do_coco_evaluation,
    encode_masks,
    evaluate_predictions_on_coco,
)
from detection.structures.bounding_box import BoxList

# (image id, json category id, [x, y, w, h]); rectangles, so the polygon is the box outline.
ANNS = [
    (1, 3, [10.0, 10.0, 40.0, 30.0]),
    (1, 7, [50.0, 40.0, 30.0, 30.0]),
    (2, 3, [20.0, 20.0, 40.0, 40.0]),
]
IMAGES = {1: (100, 80), 2: (120, 90)}  # id -> (width, height)


def _rect_poly(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture()
def coco_gt(tmp_path):
    data = {
        "images": [
            {"id": i, "width": w, "height": h, "file_name": f"{i}.png"}
            for i, (w, h) in IMAGES.items()
        ],
        "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "circle"}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": img,
                "category_id": cat,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
                "segmentation": _rect_poly(*box),
            }
            for k, (img, cat, box) in enumerate(ANNS)
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return COCO(str(path))


def _box_results(shift_x=0.0):
    return [
        {"image_id": img, "category_id": cat, "bbox": [x + shift_x, y, w, h], "score": 0.9}
        for img, cat, (x, y, w, h) in ANNS
    ]


def test_perfect_boxes_give_ap_1(coco_gt):
    metrics, summary = evaluate_predictions_on_coco(coco_gt, _box_results(), "bbox")
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    assert "Average Precision" in summary and len(summary.strip().splitlines()) == 12


def test_shifted_boxes_give_lower_ap(coco_gt):
    # shifting a w-wide box by s along x gives IoU = (w - s) / (w + s)
    shift = 8.0
    ious = [(w - shift) / (w + shift) for _, _, (x, y, w, h) in ANNS]
    thresholds = np.linspace(0.5, 0.95, 10)
    # category 3's two boxes have the same width, so the same IoU: per category, AP(t) is 1 where
    # the IoU reaches t (every box matched, no false positive) and 0 elsewhere
    assert ious[0] == ious[2]
    expected_cat3 = np.mean([ious[0] >= t for t in thresholds])
    expected_cat7 = np.mean([ious[1] >= t for t in thresholds])
    metrics, _ = evaluate_predictions_on_coco(coco_gt, _box_results(shift), "bbox")
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx((expected_cat3 + expected_cat7) / 2, abs=1e-6)
    assert metrics["AP"] < 0.5


def test_perfect_masks_give_ap_1(coco_gt):
    results = []
    for ann in coco_gt.dataset["annotations"]:
        rle = coco_gt.annToRLE(ann)
        rle["counts"] = (
            rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
        )
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "segmentation": rle,
                "score": 0.8,
            }
        )
    metrics, _ = evaluate_predictions_on_coco(coco_gt, results, "segm")
    assert metrics["AP"] == pytest.approx(1.0)


def test_no_detections_and_bad_iou_type(coco_gt):
    metrics, _ = evaluate_predictions_on_coco(coco_gt, [], "bbox")
    assert metrics == {k: 0.0 for k in METRIC_NAMES}
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_predictions_on_coco(coco_gt, [], "keypoints")


def test_encode_masks_round_trip():
    masks = torch.zeros(2, 1, 7, 9, dtype=torch.bool)
    masks[0, 0, 1:4, 2:6] = True
    masks[1, 0, 5:, :] = True
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) for r in rles)
    json.dumps(rles)
    for rle, m in zip(rles, masks):
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
        assert np.array_equal(decoded, m[0].numpy().astype(np.uint8))


class _FakeDataset:
    """The COCODataset interface the evaluator uses; images were resized by 0.5 for the model."""

    def __init__(self, coco):
        self.coco = coco
        self.id_to_img_map = {0: 1, 1: 2}
        self.contiguous_category_id_to_json_id = {1: 3, 2: 7}

    def get_img_info(self, index):
        img = self.coco.imgs[self.id_to_img_map[index]]
        return {
            "width": img["width"],
            "height": img["height"],
            "id": img["id"],
            "file_name": img["file_name"],
        }


def test_do_coco_evaluation_resizes_to_original_and_writes_files(coco_gt, tmp_path):
    ds = _FakeDataset(coco_gt)
    json_to_contig = {3: 1, 7: 2}
    preds = {}
    for index, img_id in ds.id_to_img_map.items():
        w, h = IMAGES[img_id]
        anns = [(cat, box) for img, cat, box in ANNS if img == img_id]
        boxes = torch.tensor([[x, y, x + bw, y + bh] for _, (x, y, bw, bh) in anns]) * 0.5
        bl = BoxList(boxes, (w * 0.5, h * 0.5))
        bl.add_field("scores", torch.full((len(anns),), 0.7))
        bl.add_field("labels", torch.tensor([json_to_contig[c] for c, _ in anns]))
        preds[index] = bl
    out = tmp_path / "inference"
    metrics = do_coco_evaluation(ds, preds, str(out), iou_types=("bbox",))
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["bbox"]) == set(METRIC_NAMES)
    dets = json.loads((out / "bbox.json").read_text())
    assert sorted(d["category_id"] for d in dets) == sorted(c for _, c, _ in ANNS)
    assert [d["bbox"] for d in dets if d["image_id"] == 2] == [
        pytest.approx([20.0, 20.0, 40.0, 40.0])
    ]
