"""The two Scaled-MNIST classifiers, each with regular or deformable 3x3 convolutions.

Both take normalised digits `float32[N, 1, 28, 28]` and return logits `float32[N, 10]`. Conv
layers are numbered from 1 in forward order; with `deform=True` every conv numbered
`>= min_deform_layer` is a `detection.layers.DeformConv2d` (DCNv2 when `modulation=True`, DCNv1
otherwise) whose zero-initialised offset/mask predictor is the submodule `conv_offset`, so at
initialisation a deformable network computes exactly what its regular twin computes.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("ScaledMNISTNet", "MNISTClassifier")
DEFAULT_MIN_DEFORM_LAYER = {"ScaledMNISTNet": 3, "MNISTClassifier": 4}


def conv3x3(
    in_channels: int, out_channels: int, deformable: bool, modulation: bool, bias: bool = False
) -> nn.Module:
    """A 3x3, stride 1, padding 1 conv: `nn.Conv2d` or `DeformConv2d`."""
    if not deformable:
        return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
    from detection.layers import DeformConv2d  # needs the compiled ops only when used

    return DeformConv2d(in_channels, out_channels, 3, padding=1, bias=bias, modulation=modulation)


class _ConvNet(nn.Module):
    """Conv-BN-ReLU blocks (conv-ReLU with `batch_norm=False`, the convs then with bias), max-pools
    after the blocks listed in `pool_after`, global average pooling and a linear classifier."""

    def __init__(
        self,
        channels: tuple[int, ...],
        pool_after: tuple[int, ...],
        deform: bool,
        modulation: bool,
        min_deform_layer: int,
        num_classes: int = 10,
        batch_norm: bool = True,
    ):
        super().__init__()
        if min_deform_layer < 1:
            raise ValueError(f"min_deform_layer must be >= 1, got {min_deform_layer}")
        self.deform, self.modulation, self.min_deform_layer = deform, modulation, min_deform_layer
        layers: list[nn.Module] = []
        in_c = 1
        for i, out_c in enumerate(channels, start=1):
            deformable = deform and i >= min_deform_layer
            layers.append(conv3x3(in_c, out_c, deformable, modulation, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_c))
            layers.append(nn.ReLU(inplace=True))
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
            in_c = out_c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_c, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 1, 28, 28]` -> last conv block's output `[N, C, 7, 7]`."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"input must be [N, 1, H, W], got {tuple(x.shape)}")
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))

    def convs(self) -> list[nn.Module]:
        """The conv layers in forward order (conv i is `convs()[i - 1]`)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d) or hasattr(m, "conv_offset")]


class ScaledMNISTNet(_ConvNet):
    """Four 3x3 conv blocks (32-64-128-128 channels, BN, ReLU) with 2x2 max-pools after conv1 and
    conv2 (28 -> 14 -> 7), global average pooling and fc to 10 classes. Convs from
    `min_deform_layer` on (default 3: conv3 and conv4) are deformable when `deform`."""

    def __init__(self, deform: bool = False, modulation: bool = True, min_deform_layer: int = 3):
        super().__init__((32, 64, 128, 128), (1, 2), deform, modulation, min_deform_layer)


class MNISTClassifier(_ConvNet):
    """The Simple-DCNv2 experiment's classifier: conv1, pool, conv2, pool, conv3, conv4, conv5,
    each 16 channels, 3x3, padding 1, with bias, ReLU, no BatchNorm (28 -> 14 -> 7), then global
    average pooling and fc to 10. Deformable from `min_deform_layer` (default 4: conv4 and conv5)
    when `deform`."""

    def __init__(self, deform: bool = False, modulation: bool = True, min_deform_layer: int = 4):
        super().__init__((16,) * 5, (1, 2), deform, modulation, min_deform_layer, batch_norm=False)


def build_model(
    arch: str, deform: bool, modulation: bool = True, min_deform_layer: int | None = None
) -> _ConvNet:
    """The network named `arch` (one of ARCHS); `min_deform_layer` None = the arch's default."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if min_deform_layer is None:
        min_deform_layer = DEFAULT_MIN_DEFORM_LAYER[arch]
    cls = ScaledMNISTNet if arch == "ScaledMNISTNet" else MNISTClassifier
    return cls(deform=deform, modulation=modulation, min_deform_layer=min_deform_layer)


def deformable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every deformable conv (a module with a `conv_offset` predictor)."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "conv_offset")]


def parameter_groups(model: nn.Module, lr: float, offset_lr_factor: float) -> list[dict]:
    """Optimizer groups: the offset/mask predictors (names containing `conv_offset`) get
    `lr * offset_lr_factor`, everything else `lr` (DCNv2 paper, section 3.3)."""
    offset = [p for n, p in model.named_parameters() if "conv_offset" in n]
    rest = [p for n, p in model.named_parameters() if "conv_offset" not in n]
    groups = [{"params": rest, "lr": lr, "name": "main"}]
    if offset:
        groups.append({"params": offset, "lr": lr * offset_lr_factor, "name": "conv_offset"})
    return groups
