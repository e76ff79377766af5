"""Datasets: COCO-format instance segmentation and the synthetic shapes generator."""

from detection.data.datasets.coco import COCODataset
from detection.data.datasets.shapes import generate_shapes_dataset

__all__ = ["COCODataset", "generate_shapes_dataset"]
