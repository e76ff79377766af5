"""ResNet-18/34/50/101 backbone with deformable 3x3 convs per stage and a dilated res5 (C5).

Design of the Deformable ConvNets R-50-C5 detector: the RPN runs on C4 (res4 output, stride 16)
and the RoI heads on C5 (res5 output). res5 has stride 1 and dilation `res5_dilation` (2 keeps
the output stride at 16; 1 gives the plain stride-32 res5). In stages flagged by
`stage_with_dcn` every 3x3 conv of every block is a deformable conv: `ModulatedDeformConv2dPack`
(DCNv2) or `DeformConv2d(modulation=False)` (DCNv1); their zero-initialised offset(/mask)
predictor is a submodule named `conv_offset`.

Parameter names mirror torchvision's ResNet (`stem.conv1`, `res2.0.conv1`, ..., `norm1`
for `bn1`, `resN` for `layer{N-1}`), see `torchvision_to_ours`.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from detection.layers.norm import NORMS, get_norm

# depth -> (block kind, blocks in res2..res5)
RESNET_SPECS: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def make_conv3x3(
    in_channels: int,
    out_channels: int,
    *,
    stride: int,
    dilation: int,
    groups: int,
    dcn: bool,
    modulated: bool,
    deformable_groups: int,
) -> nn.Module:
    """A bias-free 3x3 conv (padding = dilation): plain, DCNv1 or modulated DCNv2."""
    if not dcn:
        return nn.Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
    import detection.layers as L  # the op modules (land with the compiled library)

    if modulated:
        return L.ModulatedDeformConv2dPack(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            groups=groups,
            deform_groups=deformable_groups,
            bias=False,
        )
    return L.DeformConv2d(
        in_channels,
        out_channels,
        3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        groups=groups,
        bias=False,
        modulation=False,
        deform_groups=deformable_groups,
    )


class _Block(nn.Module):
    def _make_downsample(self, in_channels, out_channels, stride, norm_fn):
        if in_channels == out_channels and stride == 1:
            return None
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            norm_fn(out_channels),
        )


class BasicBlock(_Block):
    """Two 3x3 convs (the first strided) + identity/projection shortcut."""

    def __init__(
        self,
        in_channels,
        bottleneck_channels,
        out_channels,
        *,
        stride,
        dilation,
        groups,
        norm_fn,
        conv3x3_kwargs,
    ):
        super().__init__()
        if groups != 1:
            raise ValueError("MODEL.RESNETS.NUM_GROUPS must be 1 for BasicBlock depths (18/34)")
        self.conv1 = make_conv3x3(
            in_channels, out_channels, stride=stride, dilation=dilation, groups=1, **conv3x3_kwargs
        )
        self.norm1 = norm_fn(out_channels)
        self.conv2 = make_conv3x3(
            out_channels, out_channels, stride=1, dilation=dilation, groups=1, **conv3x3_kwargs
        )
        self.norm2 = norm_fn(out_channels)
        self.downsample = self._make_downsample(in_channels, out_channels, stride, norm_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Bottleneck(_Block):
    """1x1 - 3x3 - 1x1 convs + shortcut; the stride sits on the 3x3 (or on the 1x1 if asked)."""

    def __init__(
        self,
        in_channels,
        bottleneck_channels,
        out_channels,
        *,
        stride,
        dilation,
        groups,
        norm_fn,
        conv3x3_kwargs,
        stride_in_1x1=False,
    ):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride=s1, bias=False)
        self.norm1 = norm_fn(bottleneck_channels)
        self.conv2 = make_conv3x3(
            bottleneck_channels,
            bottleneck_channels,
            stride=s3,
            dilation=dilation,
            groups=groups,
            **conv3x3_kwargs,
        )
        self.norm2 = norm_fn(bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.norm3 = norm_fn(out_channels)
        self.downsample = self._make_downsample(in_channels, out_channels, stride, norm_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Stem(nn.Module):
    """7x7 conv stride 2 + norm + ReLU + 3x3 max pool stride 2 (output stride 4)."""

    def __init__(self, out_channels: int, norm_fn) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.norm1 = norm_fn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """ResNet trunk returning `{"C4": res4 output (stride 16), "C5": res5 output}`.

    Input `Tensor[N, 3, H, W]`; C4 is `Tensor[N, c4_channels, ceil(H/16), ...]`, C5 has
    `c5_channels` channels at stride 16 (res5_dilation 2) or 32 (res5_dilation 1).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: str = "FrozenBN",
        gn_num_groups: int = 32,
        gn_eps: float = 1e-5,
        num_groups: int = 1,
        width_per_group: int = 64,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        stride_in_1x1: bool = False,
        res5_dilation: int = 2,
        stage_with_dcn: Sequence[bool] = (False, False, False, False),
        with_modulated_dcn: bool = True,
        deformable_groups: int = 1,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if len(stage_with_dcn) != 4:
            raise ValueError(
                f"stage_with_dcn needs one flag per stage res2..res5 (4), got {len(stage_with_dcn)}"
            )
        if res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {res5_dilation}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5, got {freeze_at}")
        kind, blocks = RESNET_SPECS[depth]

        def norm_fn(c):
            return get_norm(norm, c, num_groups=gn_num_groups, eps=gn_eps)

        self.stem = Stem(stem_out_channels, norm_fn)
        in_ch = stem_out_channels
        out_ch = res2_out_channels
        bott_ch = num_groups * width_per_group
        self.stage_names = ["res2", "res3", "res4", "res5"]
        for i, (name, n) in enumerate(zip(self.stage_names, blocks)):
            stride = 1 if i == 0 else 2
            dilation = 1
            if name == "res5" and res5_dilation == 2:
                stride, dilation = 1, 2
            conv3x3_kwargs = dict(
                dcn=bool(stage_with_dcn[i]),
                modulated=with_modulated_dcn,
                deformable_groups=deformable_groups,
            )
            layers = []
            for b in range(n):
                if kind == "basic":
                    block = BasicBlock(
                        in_ch,
                        out_ch,
                        out_ch,
                        stride=stride if b == 0 else 1,
                        dilation=dilation,
                        groups=num_groups,
                        norm_fn=norm_fn,
                        conv3x3_kwargs=conv3x3_kwargs,
                    )
                else:
                    block = Bottleneck(
                        in_ch,
                        bott_ch,
                        out_ch,
                        stride=stride if b == 0 else 1,
                        dilation=dilation,
                        groups=num_groups,
                        norm_fn=norm_fn,
                        conv3x3_kwargs=conv3x3_kwargs,
                        stride_in_1x1=stride_in_1x1,
                    )
                layers.append(block)
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*layers))
            if name == "res4":
                self.c4_channels = out_ch
            out_ch *= 2
            bott_ch *= 2
        self.c5_channels = in_ch
        self.c5_stride = 16 if res5_dilation == 2 else 32
        self.freeze_at = freeze_at
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        modules = [self.stem] + [getattr(self, n) for n in self.stage_names]
        for m in modules[:freeze_at]:
            for p in m.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x)
        x = self.res2(x)
        x = self.res3(x)
        c4 = self.res4(x)
        c5 = self.res5(c4)
        return {"C4": c4, "C5": c5}


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


def _deformable_conv_widths(kind: str, r) -> Dict[str, List[int]]:
    """Input channels of the deformable 3x3 convs of each stage with STAGE_WITH_DCN set, the way
    ResNet builds them (bottleneck width doubling per stage; a BasicBlock's first conv takes the
    previous stage's output)."""
    widths = {}
    in_ch, out_ch, bott = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP
    for i, name in enumerate(("res2", "res3", "res4", "res5")):
        if r.STAGE_WITH_DCN[i]:
            widths[name] = [bott] if kind != "basic" else sorted({in_ch, out_ch})
        in_ch, out_ch, bott = out_ch, out_ch * 2, bott * 2
    return widths


def build_resnet_backbone(cfg) -> ResNet:
    """The backbone of `cfg.MODEL.BACKBONE` / `cfg.MODEL.RESNETS` (errors name the key)."""
    body = cfg.MODEL.BACKBONE.CONV_BODY
    m = re.fullmatch(r"R-(\d+)-C5", body)
    if m is None or int(m.group(1)) not in RESNET_SPECS:
        raise ValueError(
            f"MODEL.BACKBONE.CONV_BODY must be one of "
            f"{['R-%d-C5' % d for d in sorted(RESNET_SPECS)]}, got {body!r}"
        )
    depth = int(m.group(1))
    r = cfg.MODEL.RESNETS
    if len(r.STAGE_WITH_DCN) != 4:
        raise ValueError(
            f"MODEL.RESNETS.STAGE_WITH_DCN has {len(r.STAGE_WITH_DCN)} flags but {body} has 4 "
            f"stages (res2..res5)"
        )
    if r.NORM not in NORMS:
        raise ValueError(f"MODEL.RESNETS.NORM must be one of {NORMS}, got {r.NORM!r}")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    freeze = cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT
    if not 0 <= freeze <= 5:
        raise ValueError(f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT must be in 0..5, got {freeze}")
    if RESNET_SPECS[depth][0] == "basic" and r.NUM_GROUPS != 1:
        raise ValueError(f"MODEL.RESNETS.NUM_GROUPS must be 1 for {body} (BasicBlock)")
    if r.DEFORMABLE_GROUPS < 1:
        raise ValueError(f"MODEL.RESNETS.DEFORMABLE_GROUPS must be >= 1, got {r.DEFORMABLE_GROUPS}")
    widths = _deformable_conv_widths(RESNET_SPECS[depth][0], r)
    bad = {k: v for k, v in widths.items() if any(w % r.DEFORMABLE_GROUPS for w in v)}
    if bad:
        raise ValueError(
            f"MODEL.RESNETS.DEFORMABLE_GROUPS={r.DEFORMABLE_GROUPS} must divide the input channels "
            f"of every deformable 3x3 conv (stages of MODEL.RESNETS.STAGE_WITH_DCN); it does not "
            f"divide {bad}"
        )
    if r.NORM == "GN":
        g = cfg.MODEL.GROUP_NORM.NUM_GROUPS
        widths = [r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NUM_GROUPS * r.WIDTH_PER_GROUP]
        if g <= 0 or any(w % g for w in widths):
            raise ValueError(
                f"MODEL.GROUP_NORM.NUM_GROUPS={g} must divide MODEL.RESNETS.STEM_OUT_CHANNELS, "
                f"RES2_OUT_CHANNELS and NUM_GROUPS * WIDTH_PER_GROUP ({widths})"
            )
    return ResNet(
        depth=depth,
        norm=r.NORM,
        gn_num_groups=cfg.MODEL.GROUP_NORM.NUM_GROUPS,
        gn_eps=cfg.MODEL.GROUP_NORM.EPSILON,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        stride_in_1x1=r.STRIDE_IN_1X1,
        res5_dilation=r.RES5_DILATION,
        stage_with_dcn=tuple(bool(s) for s in r.STAGE_WITH_DCN),
        with_modulated_dcn=r.WITH_MODULATED_DCN,
        deformable_groups=r.DEFORMABLE_GROUPS,
        freeze_at=freeze,
    )
