"""The Pascal VOC detection metric: per-class average precision at IoU > 0.5, "difficult"
objects ignored, in the two forms the challenge used (the VOC2007 11-point interpolation, and
the area under the interpolated precision/recall curve used from VOC2010 on).

Per class, detections of all images are taken by decreasing score. A detection whose best IoU
with a ground-truth box of its class in its image exceeds 0.5 is a true positive if that box is
not difficult and not yet matched; it is ignored if the box is difficult; otherwise it is a false
positive. Recall is over the non-difficult boxes. Boxes are continuous xyxy (a devkit box
`[xmin, xmax]` in 1-based pixels is `[xmin - 1, xmax]`, see `detection.data.datasets.voc`), so
IoU is the devkit's "+1" IoU of the integer corners.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import logging
import os
from typing import Any

import numpy as np

from detection.engine.coco_eval import prepare_for_coco_detection

IOU_THRESHOLD = 0.5


def average_precision(recall: np.ndarray, precision: np.ndarray) -> tuple[float, float]:
    """(11-point AP, area AP) of a precision/recall curve (points in detection order).

    11-point: the mean over t in {0, 0.1, ..., 1} of the highest precision at recall >= t (0
    when no point reaches t). Area: the precision made non-increasing from the right, integrated
    over recall."""
    points = []
    for t in np.linspace(0.0, 1.0, 11):
        reached = precision[recall >= t]
        points.append(float(reached.max()) if reached.size else 0.0)
    ap11 = float(np.mean(points))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    area = float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
    return ap11, area


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


def class_precision_recall(
    detections: Sequence[tuple[int, float, Sequence[float]]],
    ground_truth: Mapping[int, Sequence[tuple[Sequence[float], bool]]],
) -> tuple[np.ndarray, np.ndarray, int]:
    """(recall, precision, number of non-difficult boxes) for one class.

    detections: (image id, score, xyxy box); ground_truth: image id -> [(xyxy box, difficult)]."""
    gt = {
        i: (np.asarray([b for b, _ in objs], dtype=np.float64).reshape(-1, 4),
            np.asarray([d for _, d in objs], dtype=bool))
        for i, objs in ground_truth.items()
    }  # fmt: skip
    matched = {i: np.zeros(len(d), dtype=bool) for i, (_, d) in gt.items()}
    npos = int(sum((~d).sum() for _, d in gt.values()))
    order = sorted(range(len(detections)), key=lambda k: -detections[k][1])
    tp, fp = [], []
    for k in order:
        image_id, _, box = detections[k]
        boxes, difficult = gt.get(image_id, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        best, j = 0.0, -1
        if len(boxes):
            ious = _iou(np.asarray(box, dtype=np.float64), boxes)
            j = int(ious.argmax())
            best = float(ious[j])
        if best > IOU_THRESHOLD:
            if difficult[j]:
                continue
            if not matched[image_id][j]:
                matched[image_id][j] = True
                tp.append(1.0)
                fp.append(0.0)
                continue
        tp.append(0.0)
        fp.append(1.0)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / max(npos, 1)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision, npos


def evaluate_voc(
    results: Sequence[Mapping[str, Any]],
    ground_truth: Mapping[int, Sequence[Mapping[str, Any]]],
    class_names: Mapping[int, str],
) -> dict[str, float]:
    """VOC metrics of COCO-style box results ("image_id", "category_id", "bbox" xywh, "score")
    against `ground_truth` (image id -> [{"category_id", "bbox" xyxy, "difficult"}]).

    Returns {"mAP": area AP, "mAP_11point": VOC07 AP, "AP_<class>": area AP per class}, means
    over the classes with at least one non-difficult box."""
    metrics: dict[str, float] = {}
    ap11s, aps = [], []
    for cat_id, name in sorted(class_names.items()):
        dets = [
            (r["image_id"], r["score"],
             (r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]))
            for r in results
            if r["category_id"] == cat_id
        ]  # fmt: skip
        gt = {
            i: [(o["bbox"], o["difficult"]) for o in objs if o["category_id"] == cat_id]
            for i, objs in ground_truth.items()
        }
        recall, precision, npos = class_precision_recall(dets, gt)
        if npos == 0:
            continue
        ap11, ap = average_precision(recall, precision) if len(recall) else (0.0, 0.0)
        ap11s.append(ap11)
        aps.append(ap)
        metrics[f"AP_{name}"] = ap
    metrics["mAP"] = float(np.mean(aps)) if aps else float("nan")
    metrics["mAP_11point"] = float(np.mean(ap11s)) if ap11s else float("nan")
    return metrics


def do_voc_evaluation(
    dataset, predictions: Mapping[int, Any], output_folder: str | None, logger: logging.Logger
) -> dict[str, float]:
    """`evaluate_voc` of `predictions` (dataset index -> BoxList) on a PascalVOCDataset, over the
    images predicted; writes `voc.json` into `output_folder`."""
    results = prepare_for_coco_detection(predictions, dataset)
    image_ids = {int(dataset.id_to_img_map[i]) for i in predictions}
    gt = {i: objs for i, objs in dataset.voc_ground_truth().items() if i in image_ids}
    names = {dataset.contiguous_category_id_to_json_id[k]: v for k, v in dataset.categories.items()}
    metrics = evaluate_voc(results, gt, names)
    logger.info(
        "VOC metric: mAP %.4f (area), %.4f (VOC07 11-point)", metrics["mAP"], metrics["mAP_11point"]
    )
    if output_folder:
        with open(os.path.join(output_folder, "voc.json"), "w") as f:
            json.dump(metrics, f, indent=1)
        summary = os.path.join(output_folder, "metrics.json")  # do_coco_evaluation's, + "voc"
        if os.path.isfile(summary):
            with open(summary) as f:
                both = json.load(f)
            both["voc"] = metrics
            with open(summary, "w") as f:
                json.dump(both, f, indent=2)
    return metrics
