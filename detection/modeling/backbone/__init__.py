"""Backbones: `build_backbone(cfg)` returns the ResNet-C5 trunk (outputs "C4" and "C5")."""

from detection.modeling.backbone.build import build_resnet_backbone
from detection.modeling.backbone.resnet import ResNet
from detection.modeling.backbone.torchvision_weights import (
    load_torchvision_resnet,
    torchvision_to_ours,
)


def build_backbone(cfg) -> ResNet:
    """The backbone named by `cfg.MODEL.BACKBONE.CONV_BODY` ("R-{18,34,50,101}-C5")."""
    return build_resnet_backbone(cfg)


__all__ = [
    "ResNet",
    "build_backbone",
    "build_resnet_backbone",
    "load_torchvision_resnet",
    "torchvision_to_ours",
]
