#!/usr/bin/env python
"""Where a digit detector's AP goes: localisation, classification or masks (docs/mnist_det.md).

    python tools/mnist_det_errors.py RUN_WORKSPACE [RUN_WORKSPACE ...] [--ann FILE]

Reads each run's COCO results (WORKSPACE/inference/mnist_det_val/{bbox,segm}.json, written by
tools/test.py) and the ground truth (--ann, default the mnist_det_val annotations) and prints,
per run, over all ground-truth digits:
- found: the fraction with a detection of any class at box IoU >= 0.5 (localisation);
- class ok: among those, the fraction whose best-overlapping detection has the right digit;
- mask IoU: among those, the median IoU of that detection's mask with the digit's stroke mask,
  and the fraction >= 0.5 (what segm AP at IoU 0.5 needs);
- fill: the median fraction of its box a predicted mask covers, against the ground truth's
  (stroke masks cover about a third of their box: a blob, or an empty mask, scores low).
"""

import argparse
from collections import defaultdict
import json
import os
import statistics
import sys

from pycocotools.coco import COCO
import pycocotools.mask as mask_utils

DEFAULT_ANN = "datasets/mnist_det/annotations/instances_val.json"


def analyse(gt: COCO, bbox: list[dict], segm: list[dict]) -> dict[str, float]:
    """The fractions described in the module docstring for one run's results."""
    # tools/test.py writes both files from the same predictions, in the same order
    if len(bbox) != len(segm) or any(
        b["image_id"] != s["image_id"] or b["score"] != s["score"] for b, s in zip(bbox, segm)
    ):
        raise ValueError("bbox.json and segm.json do not list the same detections in order")
    by_img = defaultdict(list)
    for b, s in zip(bbox, segm):
        by_img[b["image_id"]].append((b, s))
    found, class_ok, mask_iou, fill_pred, fill_gt = 0, [], [], [], []
    n = 0
    for img_id, anns in gt.imgToAnns.items():
        dets = by_img.get(img_id, [])
        for a in anns:
            n += 1
            if not dets:
                continue
            ious = mask_utils.iou([d["bbox"] for d, _ in dets], [a["bbox"]], [0])[:, 0]
            j = int(ious.argmax())
            if ious[j] < 0.5:
                continue
            found += 1
            b, s = dets[j]
            class_ok.append(b["category_id"] == a["category_id"])
            mask_iou.append(
                float(mask_utils.iou([s["segmentation"]], [a["segmentation"]], [0])[0, 0])
            )
            w, h = b["bbox"][2:]
            fill_pred.append(float(mask_utils.area(s["segmentation"])) / max(w * h, 1.0))
            fill_gt.append(float(mask_utils.area(a["segmentation"])) / a["area"])
    med = lambda v: statistics.median(v) if v else float("nan")  # noqa: E731
    return {
        "digits": n,
        "found": found / max(n, 1),
        "class_ok": sum(class_ok) / max(len(class_ok), 1),
        "mask_iou_median": med(mask_iou),
        "mask_iou_ge_0.5": sum(v >= 0.5 for v in mask_iou) / max(len(mask_iou), 1),
        "fill_pred_median": med(fill_pred),
        "fill_gt_median": med(fill_gt),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("workspaces", nargs="+", metavar="RUN_WORKSPACE")
    p.add_argument("--ann", default=DEFAULT_ANN, help="ground-truth COCO JSON")
    a = p.parse_args(argv)
    if not os.path.isfile(a.ann):
        print(f"error: --ann {a.ann}: no such file", file=sys.stderr)
        return 2
    results = {}
    for ws in a.workspaces:
        folder = os.path.join(ws, "inference", "mnist_det_val")
        try:
            with open(os.path.join(folder, "bbox.json")) as f:
                bbox = json.load(f)
            with open(os.path.join(folder, "segm.json")) as f:
                segm = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"error: {ws}: {exc}", file=sys.stderr)
            return 2
        results[ws] = (bbox, segm)
    gt = COCO(a.ann)
    cols = ("found", "class_ok", "mask_iou_median", "mask_iou_ge_0.5", "fill_pred_median")
    print("| run | " + " | ".join(cols) + " | fill_gt_median |")
    print("|" + "---|" * (len(cols) + 2))
    for ws, (bbox, segm) in results.items():
        try:
            r = analyse(gt, bbox, segm)
        except ValueError as exc:
            print(f"error: {ws}: {exc}", file=sys.stderr)
            return 2
        cells = [f"{r[c]:.3f}" for c in cols + ("fill_gt_median",)]
        print(f"| {os.path.basename(ws.rstrip(os.sep))} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
