"""Tests of the modulated deformable convolution op (detection.layers.deform_conv).

The reference is a naive float64 implementation in plain PyTorch written from CONVENTIONS.md
(gathers from the input zero-padded by one pixel); its autograd gives the convention's
gradients because d(y - floor(y))/dy = 1 is the floor-based one-sided derivative.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detection import _ext
from detection.layers import (
    DeformableConv2d,
    DeformConv2d,
    ModulatedDeformConv2d,
    ModulatedDeformConv2dPack,
    modulated_deform_conv2d,
)

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
needs_ops = pytest.mark.skipif(not _ext.HAS_OPS, reason="compiled ops not built")
pytestmark = needs_ops


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def reference_deform_conv(x, offset, mask, weight, bias, stride, padding, dilation, groups, dg):
    """Naive DCNv2 following CONVENTIONS.md; differentiable through plain torch ops."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    ho_n = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo_n = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    kk, cpg = kh * kw, c // dg
    padded = F.pad(x, (1, 1, 1, 1)).flatten(2)  # [N, C, (H+2)*(W+2)]
    ho = torch.arange(ho_n, dtype=x.dtype).view(-1, 1)
    wo = torch.arange(wo_n, dtype=x.dtype).view(1, -1)
    samples = []  # per input channel group: [N, cpg, K, Ho, Wo]
    for g in range(dg):
        chans = padded[:, g * cpg : (g + 1) * cpg]
        per_k = []
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                y = ho * sh - ph + i * dh + offset[:, 2 * (g * kk + k)]
                xx = wo * sw - pw + j * dw + offset[:, 2 * (g * kk + k) + 1]
                inside = (y > -1) & (y < h) & (xx > -1) & (xx < w)
                y = torch.where(inside, y, torch.zeros_like(y))
                xx = torch.where(inside, xx, torch.zeros_like(xx))
                y0, x0 = torch.floor(y).detach(), torch.floor(xx).detach()
                ly, lx = y - y0, xx - x0

                def corner(dy, dx):
                    flat = ((y0 + 1 + dy) * (w + 2) + (x0 + 1 + dx)).long().flatten(1)
                    idx = flat.unsqueeze(1).expand(-1, cpg, -1)
                    return torch.gather(chans, 2, idx).view(n, cpg, ho_n, wo_n)

                val = (
                    ((1 - ly) * (1 - lx)).unsqueeze(1) * corner(0, 0)
                    + ((1 - ly) * lx).unsqueeze(1) * corner(0, 1)
                    + (ly * (1 - lx)).unsqueeze(1) * corner(1, 0)
                    + (ly * lx).unsqueeze(1) * corner(1, 1)
                )
                val = val * inside.unsqueeze(1).to(x.dtype)
                if mask is not None:
                    val = val * mask[:, g * kk + k].unsqueeze(1)
                per_k.append(val)
        samples.append(torch.stack(per_k, 2))
    cols = torch.cat(samples, 1)  # [N, C, K, Ho, Wo]
    cols = cols.view(n, groups, c // groups * kk, ho_n * wo_n)
    wg = weight.reshape(groups, cout // groups, c // groups * kk)
    out = torch.einsum("gok,ngkp->ngop", wg, cols).reshape(n, cout, ho_n, wo_n)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def make_case(n, c, cout, h, w, k, stride=1, padding=0, dilation=1, groups=1, dg=1,
              modulated=True, bias=True, dtype=torch.float64, scale=2.0, seed=0):  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    kh, kw = _pair(k)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    offset = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=gen, dtype=dtype) * scale
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=gen, dtype=dtype) if modulated else None
    weight = torch.randn(cout, c // groups, kh, kw, generator=gen, dtype=dtype)
    b = torch.randn(cout, generator=gen, dtype=dtype) if bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, deform_groups=dg)
    return (x, offset, mask, weight, b), kwargs


def call_reference(args, kw):
    x, offset, mask, weight, b = args
    return reference_deform_conv(x, offset, mask, weight, b, kw["stride"], kw["padding"],
                                 kw["dilation"], kw["groups"], kw["deform_groups"])  # fmt: skip


CONFIGS = [
    dict(n=2, c=4, cout=6, h=7, w=8, k=3, padding=1),
    dict(n=3, c=4, cout=4, h=9, w=6, k=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(n=1, c=6, cout=4, h=8, w=8, k=3, stride=2, padding=2, dilation=2, groups=2, dg=3),
    dict(n=2, c=4, cout=2, h=5, w=7, k=1, modulated=False, bias=False),
    dict(n=2, c=8, cout=8, h=6, w=5, k=(3, 1), padding=(1, 0), groups=4, dg=2, modulated=False),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_forward_backward_match_reference(cfg):
    args, kw = make_case(**cfg)
    leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
    out = modulated_deform_conv2d(*leaves, **kw)
    ref_leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
    ref = call_reference(ref_leaves, kw)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for name, a, r in zip(["input", "offset", "mask", "weight", "bias"], leaves, ref_leaves):
        if a is None:
            continue
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_zero_offset_unit_mask_is_conv2d():
    args, kw = make_case(2, 4, 6, 9, 7, 3, stride=2, padding=1, dilation=1, dtype=torch.float32)
    x, offset, mask, weight, b = args
    expected = F.conv2d(x, weight, b, stride=2, padding=1)
    out = modulated_deform_conv2d(x, torch.zeros_like(offset), torch.ones_like(mask), weight, b,
                                  **kw)  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out = modulated_deform_conv2d(x, torch.zeros_like(offset), None, weight, b, **kw)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    args, kw = make_case(2, 4, 2, 5, 4, (2, 3), padding=1, groups=2, dg=2, seed=seed, scale=1.0)
    x, offset, mask, weight, b = args
    # Sample positions away from integers (the bilinear kinks): offset = integer + (0.1..0.9).
    gen = torch.Generator().manual_seed(100 + seed)
    offset = torch.randint(-2, 2, offset.shape, generator=gen).double()
    offset += 0.1 + 0.8 * torch.rand(offset.shape, generator=gen, dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (x, offset, mask, weight, b)]

    def fn(*t):
        return modulated_deform_conv2d(*t, **kw, im2col_step=1)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_modules_at_init():
    x = torch.randn(2, 4, 6, 7)
    pack = ModulatedDeformConv2dPack(4, 3, 3, padding=1)
    torch.testing.assert_close(pack(x), 0.5 * F.conv2d(x, pack.weight, None, padding=1)
                               + pack.bias.view(1, -1, 1, 1) * 1.0, rtol=1e-5, atol=1e-5)  # fmt: skip
    dcn = DeformConv2d(4, 5, 3, stride=2, padding=1, modulation=False)
    conv = torch.nn.Conv2d(4, 5, 3, stride=2, padding=1)
    conv.load_state_dict({"weight": dcn.weight, "bias": dcn.bias})
    torch.testing.assert_close(dcn(x), conv(x), rtol=1e-5, atol=1e-5)
    assert dcn.conv_offset.out_channels == 18
    assert DeformConv2d(4, 5, 3).conv_offset.out_channels == 27
    simple = DeformableConv2d(4, 8)
    assert simple(x).shape == (2, 8, 6, 7) and simple.bias is None
    names = [n for n, _ in simple.named_parameters() if "conv_offset" in n]
    assert names == ["conv_offset.weight", "conv_offset.bias"]
    mod = ModulatedDeformConv2d(4, 6, 3, padding=1)
    off = torch.zeros(2, 18, 6, 7)
    assert mod(x, off, None).shape == (2, 6, 6, 7)
