"""ResNet-18/34/50/101 backbone with deformable 3x3 convs per stage and a dilated res5 (C5).

Design of the Deformable ConvNets R-50-C5 detector: the RPN runs on C4 (res4 output, stride 16)
and the RoI heads on C5 (res5 output). res5 has stride 1 and dilation `res5_dilation` (2 keeps
the output stride at 16; 1 gives the plain stride-32 res5). In stages flagged by
`stage_with_dcn` every 3x3 conv of every block is a deformable conv: `ModulatedDeformConv2dPack`
(DCNv2) or `DeformConv2d(modulation=False)` (DCNv1); their zero-initialised offset(/mask)
predictor is a submodule named `conv_offset`.

Parameter names mirror torchvision's ResNet (`stem.conv1`, `res2.0.conv1`, ..., `norm1`
for `bn1`, `resN` for `layer{N-1}`), see `torchvision_weights.py`; the config -> arguments
mapping and its checks are `build.py`'s `build_resnet_backbone`.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from detection.layers.deform_conv import DeformConv2d, ModulatedDeformConv2dPack
from detection.layers.norm import get_norm

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
    if modulated:
        return ModulatedDeformConv2dPack(
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
    return DeformConv2d(
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
        super().__init__()  # groups must be 1: checked by build_resnet_backbone (NUM_GROUPS)
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
    """7x7 conv stride 2 + norm + ReLU + 3x3 max pool stride 2 (output stride 4).

    `channels_last_pool`: on the CPU without autograd (inference), the max pool runs on a
    channels-last copy and its output comes back contiguous. ATen's NCHW max pool on the CPU is a
    scalar loop with a branch per element (pytorch/pytorch issue 51393), its channels-last kernel
    is vectorized over channels: the pool with both conversions took 0.3-0.4x its NCHW time
    (benchmarks/RESULTS.md, seventh round). The values are the same bit for bit. Training keeps
    NCHW: there the channels-last backward and the gradient's conversion ate the gain (1.00-1.01x
    the step). Tracing and compiling keep NCHW too, so exported graphs are unchanged.
    """

    def __init__(self, out_channels: int, norm_fn, channels_last_pool: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.norm1 = norm_fn(out_channels)
        self.channels_last_pool = channels_last_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        if (
            self.channels_last_pool
            and x.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            x = x.contiguous(memory_format=torch.channels_last)
        # contiguous(): back to NCHW after a channels-last pool, a no-op otherwise
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1).contiguous()


class StageWidths(NamedTuple):
    """Channel widths of one ResNet stage: its input, the bottleneck (3x3 conv) width of its
    blocks (for BasicBlocks the 3x3 convs take `in_channels` / `out_channels`), its output."""

    blocks: int
    in_channels: int
    bottleneck_channels: int
    out_channels: int


def resnet_stage_widths(
    depth: int, stem_out_channels: int, res2_out_channels: int, res2_bottleneck_channels: int
) -> List[StageWidths]:
    """The widths of res2..res5: output and bottleneck widths double from stage to stage, each
    stage takes the previous one's output. `ResNet` builds its stages from these (and exposes
    them as `stage_widths`); the builder checks the config against the same numbers."""
    out = []
    in_ch, out_ch, bott = stem_out_channels, res2_out_channels, res2_bottleneck_channels
    for n in RESNET_SPECS[depth][1]:
        out.append(StageWidths(n, in_ch, bott, out_ch))
        in_ch, out_ch, bott = out_ch, out_ch * 2, bott * 2
    return out


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
        # The rules on these arguments are checked once, with the config key in the message, by
        # `build_resnet_backbone`; an invalid value here fails in the layer that cannot take it.
        kind = RESNET_SPECS[depth][0]

        def norm_fn(c):
            return get_norm(norm, c, num_groups=gn_num_groups, eps=gn_eps)

        self.stem = Stem(stem_out_channels, norm_fn)
        self.stage_names = ["res2", "res3", "res4", "res5"]
        self.stage_widths = resnet_stage_widths(
            depth, stem_out_channels, res2_out_channels, num_groups * width_per_group
        )
        for i, (name, w) in enumerate(zip(self.stage_names, self.stage_widths)):
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
            in_ch = w.in_channels
            for b in range(w.blocks):
                if kind == "basic":
                    block = BasicBlock(
                        in_ch,
                        w.out_channels,
                        w.out_channels,
                        stride=stride if b == 0 else 1,
                        dilation=dilation,
                        groups=num_groups,
                        norm_fn=norm_fn,
                        conv3x3_kwargs=conv3x3_kwargs,
                    )
                else:
                    block = Bottleneck(
                        in_ch,
                        w.bottleneck_channels,
                        w.out_channels,
                        stride=stride if b == 0 else 1,
                        dilation=dilation,
                        groups=num_groups,
                        norm_fn=norm_fn,
                        conv3x3_kwargs=conv3x3_kwargs,
                        stride_in_1x1=stride_in_1x1,
                    )
                layers.append(block)
                in_ch = w.out_channels
            self.add_module(name, nn.Sequential(*layers))
        c5_stride = 16 if res5_dilation == 2 else 32
        self.out_channels = {
            "C4": self.stage_widths[2].out_channels,
            "C5": self.stage_widths[3].out_channels,
        }
        self.out_strides = {"C4": 16, "C5": c5_stride}
        self.c4_channels = self.out_channels["C4"]
        self.c5_channels = self.out_channels["C5"]
        self.c5_stride = c5_stride
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
