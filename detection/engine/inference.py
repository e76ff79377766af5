"""Inference over a data loader (one shard per rank), gathering predictions onto rank 0, and
COCO evaluation of the gathered predictions."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Iterable

import torch
from torch import nn
from tqdm import tqdm

from detection.engine.coco_eval import IOU_TYPES, do_coco_evaluation
from detection.utils import comm
from detection.utils.timer import format_seconds


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    """`torch.autocast` on CUDA with `amp_dtype`; a no-op context otherwise."""
    if amp_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype)


@torch.no_grad()
def compute_on_dataset(
    model: nn.Module,
    data_loader: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "inference",
) -> dict[int, Any]:
    """Run `model` in eval mode over `data_loader`; returns dataset index -> BoxList on CPU.

    The loader yields `(images: ImageList, targets, indices)`; the model returns one BoxList per
    image (coordinates of the resized model input).
    """
    model.eval()
    results: dict[int, Any] = {}
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    bar = tqdm(data_loader, total=total, desc=desc, disable=not progress, dynamic_ncols=True)
    for images, _targets, indices in bar:
        images = images.to(device)
        with autocast_context(device, amp_dtype):
            outputs = model(images)
        for index, output in zip(indices, outputs):
            results[int(index)] = output.to(torch.device("cpu"))
    return results


def gather_predictions(
    predictions: dict[int, Any], logger: logging.Logger | None = None
) -> dict[int, Any] | None:
    """Merge every rank's predictions on rank 0 (None on other ranks); warns about gaps."""
    parts = comm.gather_to_main(predictions)
    if not comm.is_main_process():
        return None
    merged: dict[int, Any] = {}
    for part in parts:
        merged.update(part)
    if merged:
        expected = max(merged) + 1
        if len(merged) != expected and logger is not None:
            logger.warning(
                "predictions cover %d of images 0..%d: some were not evaluated",
                len(merged),
                expected - 1,
            )
    return merged


def inference(
    model: nn.Module,
    data_loader,
    dataset_name: str,
    device: torch.device,
    iou_types: Iterable[str] = IOU_TYPES,
    output_folder: str | None = None,
    amp_dtype: torch.dtype | None = None,
    mask_threshold: float = 0.5,
    progress: bool = True,
    logger: logging.Logger | None = None,
) -> dict[str, dict[str, float]] | None:
    """Predict on `data_loader` (all ranks), evaluate on rank 0.

    Returns the metrics dict of `do_coco_evaluation` on rank 0 and None elsewhere. Writes
    `predictions.pth`, `bbox.json`, `segm.json` and `metrics.json` into `output_folder`.
    """
    logger = logger or logging.getLogger("detection.inference")
    dataset = data_loader.dataset
    logger.info("Start evaluation on %s (%d images)", dataset_name, len(dataset))
    start = time.perf_counter()
    predictions = compute_on_dataset(
        model,
        data_loader,
        device,
        amp_dtype,
        progress=progress and comm.is_main_process(),
        desc=dataset_name,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    num_devices = comm.get_world_size()
    logger.info(
        "Total inference time: %s (%.4f s / image per device, on %d devices)",
        format_seconds(elapsed),
        elapsed * num_devices / max(len(dataset), 1),
        num_devices,
    )
    predictions = gather_predictions(predictions, logger)
    if predictions is None:
        return None
    if output_folder:
        os.makedirs(output_folder, exist_ok=True)
        torch.save(predictions, os.path.join(output_folder, "predictions.pth"))
    metrics = do_coco_evaluation(
        dataset, predictions, output_folder, iou_types, mask_threshold, logger
    )
    if getattr(dataset, "metric", "coco") == "voc":  # Pascal VOC: its own metric too
        from detection.engine.voc_eval import do_voc_evaluation

        metrics["voc"] = do_voc_evaluation(dataset, predictions, output_folder, logger)
    return metrics
