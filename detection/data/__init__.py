"""Data: COCO datasets, the synthetic shapes set, transforms, samplers and loaders."""

from detection.data.build import make_data_loader

__all__ = ["make_data_loader"]
