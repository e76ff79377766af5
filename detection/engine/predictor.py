"""Single-image inference for tools/infer.py: preprocessing, prediction in original image
coordinates with pasted masks, drawing, and COCO-style records."""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from detection.engine.coco_eval import encode_masks


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to `min_size`, unless the longer side would then
    exceed `max_size`, in which case the longer side becomes `max_size` (aspect kept)."""
    short, long = min(height, width), max(height, width)
    scale = min_size / short
    if max_size > 0 and long * scale > max_size:
        scale = max_size / long
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


class Predictor:
    """Runs `model` on BGR uint8 images (as read by OpenCV).

    Args:
        model: a detector in eval mode returning BoxLists with "scores", "labels", "mask".
        min_size, max_size: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST.
        pixel_mean, pixel_std: INPUT.PIXEL_MEAN / PIXEL_STD (BGR, 0-255).
        to_bgr255: INPUT.TO_BGR255 (False: the model takes RGB in 0-1).
        size_divisible: DATALOADER.SIZE_DIVISIBILITY.
        mask_threshold: MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        min_size: int,
        max_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        to_bgr255: bool = True,
        size_divisible: int = 0,
        mask_threshold: float = 0.5,
    ) -> None:
        self.model = model.eval()
        self.device = device
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
        self.to_bgr255 = to_bgr255
        self.size_divisible = size_divisible
        self.mask_threshold = mask_threshold

    @classmethod
    def from_config(cls, cfg, model: nn.Module, device: torch.device) -> "Predictor":
        return cls(
            model,
            device,
            min_size=cfg.INPUT.MIN_SIZE_TEST,
            max_size=cfg.INPUT.MAX_SIZE_TEST,
            pixel_mean=cfg.INPUT.PIXEL_MEAN,
            pixel_std=cfg.INPUT.PIXEL_STD,
            to_bgr255=cfg.INPUT.TO_BGR255,
            size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY,
            mask_threshold=cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD,
        )

    def preprocess(self, image_bgr: np.ndarray) -> torch.Tensor:
        """`uint8[H, W, 3]` BGR -> normalised `Tensor[3, h, w]` at the test size."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"image must be HxWx3 BGR, got shape {image_bgr.shape}")
        h, w = resized_shape(image_bgr.shape[0], image_bgr.shape[1], self.min_size, self.max_size)
        resized = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
        if not self.to_bgr255:
            x = x[[2, 1, 0]] / 255.0
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray):
        """Detections of one image as a BoxList in its original pixel coordinates (xyxy) with
        "scores", "labels" and, with masks, "mask" replaced by `Tensor[N, 1, H, W]` bool."""
        from detection.modeling.roi_heads.mask_head import paste_masks_in_image
        from detection.structures.image_list import to_image_list

        height, width = image_bgr.shape[:2]
        images = to_image_list([self.preprocess(image_bgr)], self.size_divisible).to(self.device)
        prediction = self.model(images)[0].to(torch.device("cpu"))
        prediction = prediction.resize((width, height)).convert("xyxy")
        if prediction.has_field("mask"):
            masks = paste_masks_in_image(
                prediction.get_field("mask"), prediction.bbox, (height, width), threshold=self.mask_threshold
            )
            prediction.add_field("mask", masks)
        return prediction


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
    masks = prediction.get_field("mask")[keep][:, 0].numpy() if prediction.has_field("mask") else None
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
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
        cv2.putText(out, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def detections_to_coco(
    prediction, image_id: int, label_to_category_id: dict[int, int], score_threshold: float = 0.0, first_id: int = 1
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
    import pycocotools.mask as mask_util

    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return float(mask_util.area({"size": rle["size"], "counts": counts}))
