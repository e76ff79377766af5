"""Datasets: COCO-format instance segmentation, Pascal VOC detection and the synthetic shapes
generator."""

from detection.data.datasets.coco import COCODataset
from detection.data.datasets.shapes import generate_shapes_dataset
from detection.data.datasets.voc import PascalVOCDataset

__all__ = ["COCODataset", "PascalVOCDataset", "generate_shapes_dataset"]
