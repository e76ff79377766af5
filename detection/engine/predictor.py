"""Single-image inference for tools/infer.py: preprocessing, prediction in original image
coordinates with pasted masks, drawing, and COCO-style records."""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import nn

from detection.data.transforms import build_transforms
from detection.engine.coco_eval import encode_masks
from detection.structures.image_list import to_image_list
from detection.structures.mask_paste import paste_prediction


class Predictor:
    """Runs `model` on BGR uint8 images (as read by OpenCV).

    Args:
        model: a detector returning BoxLists with "scores", "labels" and "mask" (put in eval mode).
        device: where the model runs.
        transform: `(image uint8[H, W, 3] BGR, None) -> (Tensor[3, h, w], None)`, the test-time
            resize and normalisation (`detection.data.transforms.build_transforms(cfg, False)`).
        size_divisible: DATALOADER.SIZE_DIVISIBILITY.
        mask_threshold: MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        transform: Callable,
        size_divisible: int = 0,
        mask_threshold: float = 0.5,
    ) -> None:
        self.model = model.eval()
        self.device = device
        self.transform = transform
        self.size_divisible = size_divisible
        self.mask_threshold = mask_threshold

    @classmethod
    def from_config(cls, cfg, model: nn.Module, device: torch.device) -> "Predictor":
        return cls(
            model,
            device,
            transform=build_transforms(cfg, is_train=False),
            size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY,
            mask_threshold=cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD,
        )

    def preprocess(self, image_bgr: np.ndarray) -> torch.Tensor:
        """`uint8[H, W, 3]` BGR -> normalised `Tensor[3, h, w]` at the test size."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"image must be HxWx3 BGR, got shape {image_bgr.shape}")
        x, _ = self.transform(image_bgr, None)
        return x

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray):
        """Detections of one image as a BoxList in its original pixel coordinates (xyxy) with
        "scores", "labels" and, with masks, "mask" replaced by `Tensor[N, 1, H, W]` bool."""
        height, width = image_bgr.shape[:2]
        images = to_image_list([self.preprocess(image_bgr)], self.size_divisible).to(self.device)
        prediction = self.model(images)[0].to(torch.device("cpu"))
        return paste_prediction(prediction, (width, height), threshold=self.mask_threshold)


def _colour(label: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(label * 7919 + 17)
    return tuple(int(c) for c in rng.integers(64, 256, size=3))


def draw_detections(
    image_bgr: np.ndarray, prediction, class_names: dict[int, str], score_threshold: float = 0.5
) -> np.ndarray:
    """A copy of the image with each detection scoring >= `score_threshold` drawn: its mask as a
    coloured overlay (alpha 0.5), its box, and "name score" above the box."""
    out = image_bgr.copy()
    keep = prediction.get_field("scores") >= score_threshold
    boxes = prediction.bbox[keep].round().int().tolist()
    scores = prediction.get_field("scores")[keep].tolist()
    labels = prediction.get_field("labels")[keep].tolist()
    masks = (
        prediction.get_field("mask")[keep][:, 0].numpy() if prediction.has_field("mask") else None
    )
    for i, label in enumerate(labels):
        colour = _colour(label)
        if masks is not None:
            m = masks[i]
            out[m] = (0.5 * out[m] + 0.5 * np.array(colour)).astype(np.uint8)
    for box, score, label in zip(boxes, scores, labels):
        colour = _colour(label)
        x1, y1, x2, y2 = box
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        text = f"{class_names.get(label, str(label))} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(
            out, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    return out


def detections_to_coco(
    prediction,
    image_id: int,
    label_to_category_id: dict[int, int],
    score_threshold: float = 0.0,
    first_id: int = 1,
) -> list[dict[str, Any]]:
    """COCO annotation records (with "score") for the detections scoring >= `score_threshold`:
    bbox [x, y, w, h] in original pixels, RLE "segmentation" when masks are present."""
    keep = prediction.get_field("scores") >= score_threshold
    p = prediction[keep]
    boxes = p.convert("xywh").bbox.tolist()
    rles = encode_masks(p.get_field("mask")) if p.has_field("mask") else [None] * len(p)
    records = []
    for k, (box, score, label, rle) in enumerate(
        zip(boxes, p.get_field("scores").tolist(), p.get_field("labels").tolist(), rles)
    ):
        rec = {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": int(label_to_category_id.get(int(label), int(label))),
            "bbox": [round(float(v), 2) for v in box],
            "score": round(float(score), 4),
            "area": round(float(box[2] * box[3]), 2),
            "iscrowd": 0,
        }
        if rle is not None:
            rec["segmentation"] = rle
            rec["area"] = float(rle_area(rle))
        records.append(rec)
    return records


def rle_area(rle: dict[str, Any]) -> float:
    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return float(mask_util.area({"size": rle["size"], "counts": counts}))
