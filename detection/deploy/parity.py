"""Detection-level parity of two predictors (PyTorch and an exported file) on the same images:
the worst case over all images, for the acceptance of docs/deployment.md (same labels, boxes
within 1e-3 relative, scores within 1e-4, pasted mask IoU above 0.99).

Predictions are `Predictor` outputs (BoxLists in original image coordinates, xyxy, "scores",
"labels", pasted "mask" `Tensor[D, 1, H, W]` bool), compared detection by detection in their
order (decreasing score).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def box_relative_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`|a - b| / max(|a|, |b|, 1)` per coordinate (`Tensor[D, 4]` each): relative to the
    coordinate, absolute below one pixel."""
    scale = torch.maximum(torch.maximum(a.abs(), b.abs()), torch.ones_like(a))
    return (a - b).abs() / scale


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of pasted bool masks `Tensor[D, 1, H, W]` pairwise by index: `Tensor[D]`; two empty
    masks count as 1."""
    a, b = a.flatten(1), b.flatten(1)
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class ParityReport:
    """The worst case so far; `add` one image's two predictions at a time."""

    images: int = 0
    detections: int = 0
    count_mismatch: list = field(default_factory=list)  # (image, count a, count b)
    label_mismatch: list = field(default_factory=list)  # (image, first index that differs)
    box_rel: tuple = (0.0, None)  # (worst value, image)
    box_abs: tuple = (0.0, None)
    score_abs: tuple = (0.0, None)
    mask_iou: tuple = (1.0, None)

    def add(self, name: str, a, b) -> None:
        """Compare prediction `a` (the reference) with `b` on image `name`."""
        self.images += 1
        if len(a) != len(b):
            self.count_mismatch.append((name, len(a), len(b)))
            return
        la, lb = a.get_field("labels"), b.get_field("labels")
        if not torch.equal(la, lb):
            first = int((la != lb).nonzero()[0, 0])
            self.label_mismatch.append((name, first))
            return
        self.detections += len(a)
        if len(a) == 0:
            return
        ba, bb = a.convert("xyxy").bbox.double(), b.convert("xyxy").bbox.double()
        sa, sb = a.get_field("scores").double(), b.get_field("scores").double()
        worse = {
            "box_rel": box_relative_difference(ba, bb).max().item(),
            "box_abs": (ba - bb).abs().max().item(),
            "score_abs": (sa - sb).abs().max().item(),
        }
        for key, value in worse.items():
            if value > getattr(self, key)[0]:
                setattr(self, key, (value, name))
        if a.has_field("mask") and b.has_field("mask"):
            iou = mask_iou(a.get_field("mask"), b.get_field("mask")).min().item()
            if iou < self.mask_iou[0]:
                self.mask_iou = (iou, name)

    def passes(self, box_rel: float = 1e-3, score_abs: float = 1e-4, iou: float = 0.99) -> bool:
        return (
            not self.count_mismatch
            and not self.label_mismatch
            and self.box_rel[0] <= box_rel
            and self.score_abs[0] <= score_abs
            and self.mask_iou[0] > iou
        )

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [
            f"images {self.images}, detections compared {self.detections}",
            f"images with another number of detections: {len(self.count_mismatch)} "
            f"{self.count_mismatch[:5]}",
            f"images with other labels: {len(self.label_mismatch)} {self.label_mismatch[:5]}",
            f"worst box difference: {self.box_rel[0]:.3g} relative ({self.box_abs[0]:.3g} px), "
            f"image {self.box_rel[1]}",
            f"worst score difference: {self.score_abs[0]:.3g}, image {self.score_abs[1]}",
            f"lowest pasted mask IoU: {self.mask_iou[0]:.6f}, image {self.mask_iou[1]}",
        ]
        return out
