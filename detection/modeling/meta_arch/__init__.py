"""Meta architectures."""

from detection.modeling.meta_arch.generalized_rcnn import GeneralizedRCNN

__all__ = ["GeneralizedRCNN"]
