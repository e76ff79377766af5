"""torchvision ResNet weights (e.g. ImageNet) into this backbone: name mapping and loading."""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch

from detection.modeling.backbone.resnet import ResNet

_TV_LAYER = re.compile(r"^layer(\d)\.")


def torchvision_to_ours(name: str) -> str:
    """Map a torchvision ResNet parameter name to this backbone's (`""` for the fc layer).

    `conv1.* -> stem.conv1.*`, `bn1.* -> stem.norm1.*`, `layerK.j.bnI.* -> res{K+1}.j.normI.*`,
    `layerK.j.convI/downsample.* -> res{K+1}.j.convI/downsample.*`.
    """
    if name.startswith("fc."):
        return ""
    if name.startswith("conv1."):
        return "stem." + name
    if name.startswith("bn1."):
        return "stem.norm1." + name[len("bn1.") :]
    m = _TV_LAYER.match(name)
    if m is None:
        raise KeyError(f"not a torchvision ResNet parameter name: {name!r}")
    name = f"res{int(m.group(1)) + 1}." + name[m.end() :]
    return re.sub(r"\.bn(\d)\.", r".norm\1.", name)


def load_torchvision_resnet(
    backbone: ResNet, state_dict: Dict[str, torch.Tensor]
) -> Tuple[List[str], List[str]]:
    """Load a torchvision-format ResNet state dict (e.g. ImageNet weights) into `backbone`.

    Names are mapped with `torchvision_to_ours`; the fc layer and `num_batches_tracked` are
    dropped. With GN the BN running statistics are dropped and BN's affine weight/bias
    initialise GN's; the 3x3 weights of deformable stages load into the deformable convs (their
    `conv_offset` predictors stay zero). Shapes must match. Returns `(missing, skipped)`: our keys left at their initial value (e.g. the
    `conv_offset` predictors, or GN's affine parameters when absent) and source keys not used.
    """
    ours = backbone.state_dict()
    mapped: Dict[str, torch.Tensor] = {}
    skipped: List[str] = []
    for k, v in state_dict.items():
        if k.endswith("num_batches_tracked"):
            skipped.append(k)
            continue
        tgt = torchvision_to_ours(k)
        if tgt == "" or tgt not in ours:
            skipped.append(k)
            continue
        if ours[tgt].shape != v.shape:
            raise ValueError(
                f"shape mismatch for {k} -> {tgt}: {tuple(v.shape)} vs {tuple(ours[tgt].shape)}"
            )
        mapped[tgt] = v
    missing = sorted(set(ours) - set(mapped))
    ours.update(mapped)
    backbone.load_state_dict(ours)
    return missing, skipped
