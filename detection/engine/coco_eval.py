"""COCO-style evaluation of detections (boxes and instance masks) with pycocotools.

Predictions come from the model in the coordinates of the resized model input; here they are
resized back to each image's original size, masks are pasted into the image and RLE-encoded, and
everything is written in the COCO results format (JSON category ids, boxes as [x, y, w, h]).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from typing import Any, Iterable, Mapping

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
import pycocotools.mask as mask_util
import torch

from detection.structures.mask_paste import paste_prediction

IOU_TYPES = ("bbox", "segm")
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _original_size_prediction(prediction, img_info: Mapping[str, Any]):
    """`prediction` (a BoxList) resized to the image's original (width, height), in xywh."""
    size = (int(img_info["width"]), int(img_info["height"]))
    return prediction.resize(size).convert("xywh")


def prepare_for_coco_detection(predictions: Mapping[int, Any], dataset) -> list[dict[str, Any]]:
    """COCO box results: one dict {"image_id","category_id","bbox" [x,y,w,h],"score"} per detection.

    Args:
        predictions: dataset index -> BoxList with fields "scores" and "labels" (contiguous ids)
            in the coordinates of the resized model input.
        dataset: a COCODataset (`get_img_info`, `id_to_img_map`, `contiguous_category_id_to_json_id`).
    """
    results: list[dict[str, Any]] = []
    for index in sorted(predictions):
        prediction = predictions[index]
        if len(prediction) == 0:
            continue
        img_info = dataset.get_img_info(index)
        image_id = int(dataset.id_to_img_map[index])
        boxes = _original_size_prediction(prediction, img_info).bbox.tolist()
        scores = prediction.get_field("scores").tolist()
        labels = prediction.get_field("labels").tolist()
        for box, score, label in zip(boxes, scores, labels):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(dataset.contiguous_category_id_to_json_id[int(label)]),
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    return results


def encode_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """RLE-encode binary masks `Tensor[N, 1, H, W]` (or `[N, H, W]`); counts as str (JSON-able)."""
    if masks.dim() == 4:
        masks = masks[:, 0]
    rles = []
    for m in masks.to(torch.uint8).cpu().numpy():
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        rles.append(rle)
    return rles


def paste_prediction_masks(
    prediction, img_info: Mapping[str, Any], threshold: float = 0.5
) -> torch.Tensor:
    """The "mask" field (`Tensor[N, 1, M, M]` probabilities) pasted into the original image:
    `Tensor[N, 1, height, width]` bool."""
    size = (int(img_info["width"]), int(img_info["height"]))
    return paste_prediction(prediction, size, threshold=threshold).get_field("mask")


def prepare_for_coco_segmentation(
    predictions: Mapping[int, Any], dataset, mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """COCO mask results: {"image_id","category_id","segmentation" (RLE),"score"} per detection."""
    results: list[dict[str, Any]] = []
    for index in sorted(predictions):
        prediction = predictions[index]
        if len(prediction) == 0:
            continue
        if not prediction.has_field("mask"):
            raise KeyError(
                "segm evaluation needs predictions with a 'mask' field (is MODEL.MASK_ON off?)"
            )
        img_info = dataset.get_img_info(index)
        image_id = int(dataset.id_to_img_map[index])
        rles = encode_masks(paste_prediction_masks(prediction, img_info, mask_threshold))
        scores = prediction.get_field("scores").tolist()
        labels = prediction.get_field("labels").tolist()
        for rle, score, label in zip(rles, scores, labels):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(dataset.contiguous_category_id_to_json_id[int(label)]),
                    "segmentation": rle,
                    "score": float(score),
                }
            )
    return results


def evaluate_predictions_on_coco(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    iou_type: str,
    image_ids: Iterable[int] | None = None,
) -> tuple[dict[str, float], str]:
    """Run COCOeval on `results` (COCO results format) against `coco_gt`.

    Args:
        iou_type: "bbox" or "segm".
        image_ids: the images evaluated (default: all images of `coco_gt`); images without
            results count as missed detections.

    Returns:
        ({"AP","AP50","AP75","APs","APm","APl"} in [0, 1] (-1 where an area range has no ground
        truth), the 12-line COCOeval summary text). With no results at all, every AP is 0.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not results:
        return {k: 0.0 for k in METRIC_NAMES}, f"no {iou_type} detections: every AP is 0"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()
    stats = coco_eval.stats
    return {name: float(stats[i]) for i, name in enumerate(METRIC_NAMES)}, summary.getvalue()


def do_coco_evaluation(
    dataset,
    predictions: Mapping[int, Any],
    output_folder: str | None = None,
    iou_types: Iterable[str] = IOU_TYPES,
    mask_threshold: float = 0.5,
    logger: logging.Logger | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate `predictions` (dataset index -> BoxList) on `dataset.coco`.

    Writes `<iou_type>.json` (COCO results) and `metrics.json`
    ({"bbox": {"AP", ...}, "segm": {...}}) into `output_folder` when given, logs the COCOeval
    summaries, and returns the metrics dict.
    """
    logger = logger or logging.getLogger("detection.coco_eval")
    image_ids = [int(dataset.id_to_img_map[i]) for i in predictions]
    metrics: dict[str, dict[str, float]] = {}
    if output_folder:
        os.makedirs(output_folder, exist_ok=True)
    for iou_type in iou_types:
        if iou_type == "bbox":
            results = prepare_for_coco_detection(predictions, dataset)
        elif iou_type == "segm":
            results = prepare_for_coco_segmentation(predictions, dataset, mask_threshold)
        else:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        if output_folder:
            with open(os.path.join(output_folder, f"{iou_type}.json"), "w") as f:
                json.dump(results, f)
        metrics[iou_type], summary = evaluate_predictions_on_coco(
            dataset.coco, results, iou_type, image_ids
        )
        logger.info(
            "Evaluation %s (%d detections on %d images):\n%s",
            iou_type,
            len(results),
            len(image_ids),
            summary,
        )
    if output_folder:
        with open(os.path.join(output_folder, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics
