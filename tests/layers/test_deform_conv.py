"""Tests of the modulated deformable convolution op (detection.layers.deform_conv).

Over 350 lines: the op's whole test matrix (reference, gradcheck, published cases, CUDA backends,
ISA variants, modules) sits beside the one float64 reference it shares.

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

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
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
    kwargs = dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, deform_groups=dg
    )
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


# The CPU kernel's layout copies (csrc/common/cpu_layout.h) work in blocks of 16 channels over
# runs of max(16, 16384 // C) pixels of a row: 20 channels end in a block of 4; 600 channels cut a
# row of 40 pixels into runs of 27 and 13 and end in a block of 8; 2 output channels are less
# than a block.
LAYOUT_CONFIGS = [
    dict(n=2, c=20, cout=2, h=3, w=5, k=3, padding=1),
    dict(n=1, c=600, cout=3, h=2, w=40, k=3, padding=1, dg=2),
]


@pytest.mark.parametrize("cfg", CONFIGS + LAYOUT_CONFIGS)
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
    expected = 0.5 * F.conv2d(x, pack.weight, None, padding=1) + pack.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(pack(x), expected, rtol=1e-5, atol=1e-5)
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


def _grads(args, kw, grad_out=None, **extra):
    leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
    out = modulated_deform_conv2d(*leaves, **kw, **extra)
    out.backward(torch.randn_like(out) if grad_out is None else grad_out)
    return out, [a.grad if a is not None else None for a in leaves]


def test_channels_last_input_and_gradient_read_in_place():
    """A channels-last model's activations: the CPU kernel reads a channels-last input and output
    gradient in place (no NCHW copy) and returns the output and the input gradient channels-last,
    as `F.conv2d` does (the NCHW case NCHW); the results are those of the NCHW tensors, bit for
    bit, but for the bias gradient: ATen's sum of the output gradient adds in memory order."""
    args, kw = make_case(2, 20, 24, 7, 9, 3, padding=1, dg=2, dtype=torch.float32)
    grad_out = torch.randn(2, 24, 7, 9, generator=torch.Generator().manual_seed(1))
    out, grads = _grads(args, kw, grad_out)
    cl = torch.channels_last
    args_cl = (args[0].to(memory_format=cl),) + args[1:]
    assert args_cl[0].is_contiguous(memory_format=cl) and not args_cl[0].is_contiguous()
    out_cl, grads_cl = _grads(args_cl, kw, grad_out.to(memory_format=cl))
    assert out.is_contiguous() and grads[0].is_contiguous()
    assert out_cl.is_contiguous(memory_format=cl) and not out_cl.is_contiguous()
    assert grads_cl[0].is_contiguous(memory_format=cl) and not grads_cl[0].is_contiguous()
    torch.testing.assert_close(out_cl, out, rtol=0, atol=0)
    for name, g, g_cl in zip(["input", "offset", "mask", "weight"], grads, grads_cl):
        torch.testing.assert_close(g_cl, g, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(grads_cl[4], grads[4], rtol=1e-5, atol=1e-5)


def test_batch_zero():
    args, kw = make_case(0, 4, 6, 5, 5, 3, padding=1)
    out, grads = _grads(args, kw, grad_out=torch.zeros(0, 6, 5, 5, dtype=torch.float64))
    assert out.shape == (0, 6, 5, 5)
    for g, a in zip(grads, args):
        assert g.shape == a.shape
    assert torch.count_nonzero(grads[3]) == 0 and torch.count_nonzero(grads[4]) == 0


@pytest.mark.parametrize("c, cout", [(0, 3), (4, 0)])
def test_zero_input_or_output_channels(c, cout):
    """Nothing to sample (0 input channels) or nothing to produce (0 output channels): the output
    is the bias, every gradient is zero (the CPU GEMMs go through a 1x1 convolution, which
    rejects zero channels, so the kernel must not call it)."""
    args, kw = make_case(2, c, cout, 5, 6, 3, padding=1, dg=1)
    out, grads = _grads(args, kw)
    torch.testing.assert_close(out, args[4].view(1, -1, 1, 1).expand_as(out), rtol=0, atol=0)
    for name, g, a in zip(["input", "offset", "mask", "weight", "bias"], grads, args):
        assert g.shape == a.shape, name
        if name != "bias":
            assert torch.count_nonzero(g) == 0, name


def test_im2col_step_independent():
    args, kw = make_case(5, 4, 4, 6, 6, 3, padding=1, dg=2)
    grad_out = torch.randn(5, 4, 6, 6, dtype=torch.float64)
    out1, grads1 = _grads(args, kw, grad_out, im2col_step=64)
    for step in (1, 2, 3, 4):
        out, grads = _grads(args, kw, grad_out, im2col_step=step)
        torch.testing.assert_close(out, out1, rtol=1e-12, atol=1e-12, msg=f"step {step}")
        for name, g, g1 in zip(["input", "offset", "mask", "weight", "bias"], grads, grads1):
            torch.testing.assert_close(g, g1, rtol=1e-12, atol=1e-12, msg=f"{name} step {step}")


def test_float32_matches_float64_and_noncontiguous():
    args, kw = make_case(2, 4, 6, 7, 8, 3, padding=1, dg=2, groups=2)
    ref = modulated_deform_conv2d(*args, **kw)
    args32 = [a.float() for a in args]
    x = args32[0].contiguous(memory_format=torch.channels_last)
    offset = args32[1].transpose(2, 3).contiguous().transpose(2, 3)
    out = modulated_deform_conv2d(x, offset, *args32[2:], **kw)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    for cfg in CONFIGS[:3]:
        args, kw = make_case(**{**cfg, "groups": 1}, dtype=torch.float32)
        x, offset, mask, weight, b = args
        ours = modulated_deform_conv2d(*args, **kw)
        theirs = torchvision.ops.deform_conv2d(
            x, offset, weight, b, stride=kw["stride"], padding=kw["padding"],
            dilation=kw["dilation"], mask=mask,
        )  # fmt: skip
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4, msg=str(cfg))


# ---------------------------------------------------------------------------------------------
# Published reference cases (copied from ../shared/reference into tests/fixtures).


def _load(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def _close(actual, expected, rtol, atol=1e-8, what=""):
    actual = actual.detach().double().numpy()
    expected = np.asarray(expected, dtype=np.float64).reshape(actual.shape)
    assert np.allclose(actual, expected, rtol, atol), f"{what}: {actual} vs {expected}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mmcv_modulated_pack_case(dtype):
    case = _load("mmcv_modulated_deform_conv.json")
    args = case["module_construction"]["args"]
    tol = case["tolerance"]
    layer = ModulatedDeformConv2dPack(**args).to(dtype)
    layer.weight.data.fill_(1.0)
    x = torch.tensor(case["inputs"]["x"]["value"], dtype=dtype, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    exp = case["expected"]
    _close(out, exp["output"]["value"], tol["rtol"], tol["atol"], "output")
    _close(x.grad, exp["input_grad"]["value"], tol["rtol"], tol["atol"], "input_grad")
    _close(layer.weight.grad, exp["weight_grad"]["value"], tol["rtol"], tol["atol"], "weight")
    _close(layer.conv_offset.weight.grad, exp["conv_offset_weight_grad"]["value"], tol["rtol"],
           tol["atol"], "conv_offset.weight")  # fmt: skip
    _close(layer.conv_offset.bias.grad, exp["conv_offset_bias_grad"]["value"], tol["rtol"],
           tol["atol"], "conv_offset.bias")  # fmt: skip


def test_mmcv_modulated_raw_op_case():
    case = _load("mmcv_modulated_deform_conv.json")
    tol = case["tolerance"]
    derived = case["derived_independently_not_upstream"]
    x = torch.tensor(case["inputs"]["x"]["value"], dtype=torch.float64, requires_grad=True)
    offset = torch.zeros(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.full((1, 4, 4, 4), 0.5, dtype=torch.float64, requires_grad=True)
    weight = torch.ones(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    out = modulated_deform_conv2d(x, offset, mask, weight, None, padding=1)
    out.backward(torch.ones_like(out))
    _close(out, derived["raw_output"], tol["rtol"], tol["atol"], "output")
    _close(x.grad, derived["raw_grad_input"], tol["rtol"], tol["atol"], "input")
    _close(weight.grad, derived["raw_grad_weight"], tol["rtol"], tol["atol"], "weight")
    _close(offset.grad, derived["raw_grad_offset_mmcv_rule"]["value"], tol["rtol"], tol["atol"],
           "offset")  # fmt: skip
    _close(mask.grad, derived["raw_grad_mask"]["value"], tol["rtol"], tol["atol"], "mask")


@pytest.mark.parametrize("dtype,step", [(torch.float32, 2), (torch.float64, 2), (torch.float64, 3)])
def test_mmcv_deform_conv_v1_case(dtype, step):
    case = _load("mmcv_deform_conv_v1.json")
    inputs, exp = case["inputs"], case["expected"]
    rtol = case["tolerance"]["rtol_by_case"]["cpu float32" if dtype == torch.float32
                                             else "float64 (cpu/cuda/mlu)"]  # fmt: skip
    batch = 10
    layer = DeformConv2d(1, 1, 2, bias=False, modulation=False).to(dtype)
    layer.im2col_step = step  # 3 does not divide the batch: must work (mmcv asserts instead)
    with torch.no_grad():
        layer.conv_offset.weight.copy_(
            torch.tensor(inputs["offset_weight"]["value"]).view(8, 1, 2, 2)
        )
        layer.conv_offset.bias.copy_(torch.tensor(inputs["offset_bias"]["value"]))
        layer.weight.copy_(torch.tensor(inputs["deform_weight"]["value"]).view(1, 1, 2, 2))
    x = torch.tensor(inputs["x_single"]["value"], dtype=dtype).repeat(batch, 1, 1, 1)
    x.requires_grad_()
    out = layer(x)
    out.backward(torch.ones_like(out))
    atol = case["tolerance"]["atol"]
    _close(out, np.repeat(exp["out"]["value"], batch, 0), rtol, atol, "out")
    _close(x.grad, np.repeat(exp["x_grad"]["value"], batch, 0), rtol, atol, "x_grad")
    _close(layer.conv_offset.weight.grad / batch, exp["offset_weight_grad_per_sample"]["value"],
           rtol, atol, "offset weight")  # fmt: skip
    _close(layer.conv_offset.bias.grad / batch, exp["offset_bias_grad_per_sample"]["value"], rtol,
           atol, "offset bias")  # fmt: skip
    _close(layer.weight.grad / batch, exp["deform_weight_grad_per_sample"]["value"], rtol, atol,
           "weight")  # fmt: skip


def test_detectron2_forward_case():
    case = _load("detectron2_deformable.json")["case_forward_output"]
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    assert x.tolist() == case["input"]["value"]
    offset = torch.full((1, 18, 5, 5), 0.5)
    weight = torch.ones(1, 1, 3, 3)
    expected = np.asarray(case["expected_dcn_v1_output"]["value"], dtype=np.float64)
    v1 = modulated_deform_conv2d(x, offset, None, weight, None, padding=1)
    assert np.allclose(v1.numpy()[0, 0], expected, rtol=1e-5, atol=1e-8)
    v2 = modulated_deform_conv2d(x, offset, torch.full((1, 9, 5, 5), 0.5), weight, None, padding=1)
    assert np.allclose(v2.numpy()[0, 0], 0.5 * expected, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Torch integration: opcheck, compile, autocast, double backward.


@pytest.mark.parametrize("modulated,bias", [(True, True), (False, False)])
def test_opcheck(modulated, bias):
    args, kw = make_case(2, 2, 2, 4, 3, 3, padding=1, dg=2, modulated=modulated, bias=bias,
                         scale=1.0)  # fmt: skip
    x, offset, mask, weight, b = args
    args = [a.requires_grad_() if a is not None else None for a in args]
    params = (1, 1, 1, 1, 1, 1, 1, 2, 64)
    torch.library.opcheck(torch.ops.detection.modulated_deform_conv2d.default, (*args, *params))
    grad = torch.randn(2, 2, 4, 3, dtype=torch.float64)
    plain = [a.detach() if a is not None else None for a in args]
    torch.library.opcheck(torch.ops.detection._modulated_deform_conv2d_backward.default,
                          (grad, *plain, *params))  # fmt: skip
    # a channels-last input: the fake kernels' results have the real ones' strides
    cl = [x.detach().to(memory_format=torch.channels_last).requires_grad_(), *args[1:]]
    torch.library.opcheck(torch.ops.detection.modulated_deform_conv2d.default, (*cl, *params))
    torch.library.opcheck(torch.ops.detection._modulated_deform_conv2d_backward.default,
                          (grad, cl[0].detach(), *plain[1:], *params))  # fmt: skip


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    layer = DeformConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        layer.conv_offset.weight.normal_(0, 0.1)
    x = torch.randn(1, 2, 6, 5, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    out.sum().backward()
    assert x.grad is not None and layer.conv_offset.weight.grad is not None


def test_cpu_autocast_runs_in_float32():
    args, kw = make_case(1, 2, 2, 4, 4, 3, padding=1, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = modulated_deform_conv2d(*[a.bfloat16() for a in args], **kw)
    assert out.dtype == torch.float32
    ref = modulated_deform_conv2d(*[a.bfloat16().float() for a in args], **kw)
    torch.testing.assert_close(out, ref)


def test_cuda_autocast_python_kernel_replaces_one_already_there():
    # torch 2.11's register_autocast(op, "cpu") also leaves a float32 Python kernel on
    # AutocastCUDA, and py_impl refuses to override one: our registration must replace it (on
    # 2.11 `import detection` failed here before it did). Simulated with a stand-in kernel.
    from detection.layers import deform_conv as dc

    op = torch.ops.detection.modulated_deform_conv2d.default
    key = torch._C.DispatchKey.AutocastCUDA
    ours = op.py_kernels[key]

    def stand_in(*args):
        raise AssertionError("the stand-in kernel was kept")

    op.py_kernels.pop(key)
    op.py_impl(key)(stand_in)
    try:
        dc._register_cuda_autocast_python_kernel(op)
        kernel = op.py_kernels[key]
        assert kernel is not stand_in
        # the kernel now in place is ours: it casts to the autocast dtype and calls the op
        assert kernel.__code__.co_names == ours.__code__.co_names
    finally:
        op.py_kernels.pop(key, None)
        op.py_impl(key)(ours)


def test_double_backward_raises():
    args, kw = make_case(1, 2, 2, 4, 4, 3, padding=1)
    leaves = [a.requires_grad_() for a in args]
    out = modulated_deform_conv2d(*leaves, **kw)
    (gx,) = torch.autograd.grad(out.sum(), leaves[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


# ---------------------------------------------------------------------------------------------
# Bad input and non-finite offsets.


def _bad(name):
    args, kw = make_case(2, 4, 4, 5, 5, 3, padding=1, dtype=torch.float32)
    x, offset, mask, weight, b = args
    cases = {
        "input_rank": ((x[0], offset, mask, weight, b), kw, "input must be a 4-D"),
        "weight_rank": ((x, offset, mask, weight[0], b), kw, "weight must be a 4-D"),
        "offset_channels": ((x, offset[:, :9], mask, weight, b), kw, "offset must have shape"),
        "offset_size": ((x, offset[:, :, :4], mask, weight, b), kw, "offset must have shape"),
        "mask_channels": (
            (x, offset, torch.cat([mask, mask], 1), weight, b),
            kw,
            "mask must have shape",
        ),
        "bias_shape": ((x, offset, mask, weight, b[:2]), kw, "bias must have shape"),
        "weight_channels": ((x, offset, mask, weight[:, :2], b), kw, "weight must have C/groups"),
        "groups": ((x, offset, mask, weight, b), {**kw, "groups": 3}, "divisible by groups"),
        "deform_groups": (
            (x, offset, mask, weight, b),
            {**kw, "deform_groups": 3},
            "divisible by deform_groups",
        ),
        "offset_dtype": (
            (x, offset.double(), mask, weight, b),
            kw,
            "offset must have the same dtype",
        ),
        "mask_dtype": ((x, offset, mask.double(), weight, b), kw, "mask must have the same dtype"),
        "int_input": ((x.int(), offset, mask, weight, b), kw, "input must be a floating-point"),
        "half_on_cpu": (
            [a.half() for a in (x, offset, mask, weight, b)],
            kw,
            "float32 and float64",
        ),
        "stride": ((x, offset, mask, weight, b), {**kw, "stride": 0}, "stride must be positive"),
        "kernel_too_big": (
            (x[:, :, :1, :1], offset, mask, weight, b),
            {**kw, "padding": 0},
            "kernel .* is larger than the padded input",
        ),  # fmt: skip
        "offset_device": (
            (x, offset.to("meta"), mask, weight, b),
            kw,
            "offset must be on the same device",
        ),
    }
    return cases[name]


@pytest.mark.parametrize("name", [
    "input_rank", "weight_rank", "offset_channels", "offset_size", "mask_channels", "bias_shape",
    "weight_channels", "groups", "deform_groups", "offset_dtype", "mask_dtype", "int_input",
    "half_on_cpu", "stride", "kernel_too_big", "offset_device",
])  # fmt: skip
def test_bad_input_names_argument(name):
    args, kw, word = _bad(name)
    with pytest.raises(RuntimeError, match=word):
        modulated_deform_conv2d(*args, **kw)


def test_backward_bad_grad_output():
    args, kw = make_case(1, 2, 2, 4, 4, 3, padding=1)
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.detection._modulated_deform_conv2d_backward(
            torch.zeros(1, 2, 3, 4, dtype=torch.float64), *args, 1, 1, 1, 1, 1, 1, 1, 1, 64
        )


def test_non_finite_offsets():
    args, kw = make_case(2, 4, 4, 6, 5, 3, padding=1, dg=2)
    x, offset, mask, weight, b = args
    gen = torch.Generator().manual_seed(3)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e9, -3e9],
                            dtype=torch.float64)  # fmt: skip
    pick = torch.rand(offset.shape, generator=gen) < 0.3
    which = torch.randint(0, len(specials), offset.shape, generator=gen)
    offset = torch.where(pick, specials[which], offset)
    args = (x, offset, mask, weight, b)
    out, grads = _grads(args, kw)
    assert torch.isfinite(out).all()
    for g in grads:
        assert torch.isfinite(g).all()
    torch.testing.assert_close(out, call_reference(args, kw), rtol=1e-10, atol=1e-10)
    for dtype in (torch.float32,):
        out32 = modulated_deform_conv2d(*[a.to(dtype) for a in args], **kw)
        assert torch.isfinite(out32).all()


# ---------------------------------------------------------------------------------------------
# Without the compiled library.


def test_missing_library_raises_build_hint(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_OPS", False)
    args, kw = make_case(1, 2, 2, 4, 4, 3, padding=1)
    with pytest.raises(RuntimeError, match="not built"):
        modulated_deform_conv2d(*args, **kw)


def test_import_without_compiled_library():
    code = (
        "import torch\n"
        "def fail(path):\n"
        "    raise OSError('simulated: library missing')\n"
        "torch.ops.load_library = fail\n"
        "import detection, detection.layers as L\n"
        "assert not detection.HAS_OPS\n"
        "layer = L.DeformConv2d(2, 2, 3, padding=1)\n"
        "try:\n"
        "    layer(torch.zeros(1, 2, 4, 4))\n"
        "except RuntimeError as e:\n"
        "    assert 'pip install' in str(e), str(e)\n"
        "    print('HINT-OK')\n"
    )
    root = os.path.dirname(os.path.dirname(DATA))
    env = {**os.environ, "PYTHONPATH": root}
    res = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and "HINT-OK" in res.stdout, res.stderr


def test_cpu_tiles_spanning_images_match_per_image():
    """The CPU kernel multiplies the batch's columns in tiles: bands of output positions across
    the images, of at most 2048 rows and 16 MB. Here 64 channels x 9 kernel points make 2304
    bytes per float32 row, so the batch of 3 x 3600 positions runs as 6 bands of 600 positions
    of all 3 images (1800 rows), and an image alone as 2 bands of 1800: every image must come
    out as when it is computed alone."""
    args, kw = make_case(3, 64, 8, 60, 60, 3, padding=1, dg=2, dtype=torch.float32, seed=3)
    grad_out = torch.randn(3, 8, 60, 60, generator=torch.Generator().manual_seed(4))
    out, grads = _grads(args, kw, grad_out)
    grad_weight = torch.zeros_like(args[3])
    for i in range(3):
        one = [a[i : i + 1] if a is not None and a.dim() == 4 and j != 3 else a
               for j, a in enumerate(args)]  # fmt: skip
        out_i, grads_i = _grads(one, kw, grad_out[i : i + 1])
        torch.testing.assert_close(out[i : i + 1], out_i, rtol=1e-5, atol=1e-4, msg=f"out {i}")
        for name, g, g_i in zip(["input", "offset", "mask"], grads, grads_i):
            torch.testing.assert_close(g[i : i + 1], g_i, rtol=1e-5, atol=1e-4, msg=f"{name} {i}")
        grad_weight += grads_i[3]
    torch.testing.assert_close(grads[3], grad_weight, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("groups", [1, 2])
def test_cpu_backward_gemm_libraries_match_float64(groups):
    """The backward GEMMs run through BLAS or oneDNN, by CPU (`_ext.cpu_backward_gemm()`); both
    are forced here in turn on every machine: each matches the float64 result to float32
    rounding, the forward is the same in both, and None restores the CPU's pick. Grouped convs
    run oneDNN's grouped 1x1 convolution whatever is forced."""
    args, kw = make_case(2, 40, 24, 9, 11, 3, padding=1, dg=2, groups=groups, seed=5)
    grad_out = torch.randn(2, 24, 9, 11, generator=torch.Generator().manual_seed(6))
    ref_out, ref_grads = _grads(args, kw, grad_out.double())
    args32 = [a.float() for a in args]
    pick = _ext.cpu_backward_gemm()
    outs = []
    try:
        for lib in ("blas", "onednn"):
            _ext.set_cpu_backward_gemm(lib)
            assert _ext.cpu_backward_gemm() == lib
            out, grads = _grads(args32, kw, grad_out)
            outs.append(out)
            for name, g, r in zip(["input", "offset", "mask", "weight", "bias"], grads, ref_grads):
                scale = r.abs().max().item()
                torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5 * scale,
                                           msg=f"{lib}: {name}")  # fmt: skip
    finally:
        _ext.set_cpu_backward_gemm(None)
    assert _ext.cpu_backward_gemm() == pick
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(outs[0].double(), ref_out, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="expected 'auto', 'blas' or 'onednn'"):
        _ext.set_cpu_backward_gemm("mkl")


def test_cpu_large_weight_gradient_by_blas_matches_reference():
    """Where oneDNN multiplies the backward's GEMMs, a weight gradient over 1 MiB still goes to
    BLAS (`_ext.cpu_weight_grad_gemm`), summed over the column tiles inside the GEMM (addmm_):
    128 -> 256 channels make a 1.2 MB float32 gradient, and 2 images of 30 x 40 two tiles of
    1200 rows. Both libraries forced in turn: the small gradient follows the forced library, the
    large one is BLAS's, and every float32 gradient matches the float64 reference."""
    args, kw = make_case(2, 128, 256, 30, 40, 3, padding=1, dg=2, seed=8)
    grad_out = torch.randn(2, 256, 30, 40, generator=torch.Generator().manual_seed(9),
                           dtype=torch.float64)  # fmt: skip
    ref_leaves = [a.clone().requires_grad_() for a in args]
    call_reference(ref_leaves, kw).backward(grad_out)
    args32 = [a.float() for a in args]
    try:
        for lib in ("blas", "onednn"):
            _ext.set_cpu_backward_gemm(lib)
            assert _ext.cpu_weight_grad_gemm(256 * 128 * 9 * 4) == "blas"
            assert _ext.cpu_weight_grad_gemm(2**20) == lib
            _, grads = _grads(args32, kw, grad_out.float())
            for name, g, r in zip(["input", "offset", "mask", "weight", "bias"], grads, ref_leaves):
                scale = r.grad.abs().max().item()
                torch.testing.assert_close(g.double(), r.grad, rtol=1e-4, atol=1e-5 * scale,
                                           msg=f"{lib}: {name}")  # fmt: skip
    finally:
        _ext.set_cpu_backward_gemm(None)


@pytest.mark.parametrize("c, dg", [(64, 1), (72, 1), (144, 2), (200, 1)])
def test_cpu_backward_columns_from_the_sweep_or_im2col(c, dg):
    """The weight gradient's GEMM needs each tile's columns. The backward sweep's tasks take a
    deformable group's chunks of 64 channels together (one task per image and group) where that
    loads the threads as evenly as one chunk per task would, and then write the columns as they
    read the corners (no im2col pass); else one chunk each, and im2col writes the columns where a
    group has more than one chunk. At one thread (2 images: whole groups) and at five (a chunk per task),
    each form matches the float64 reference, in float32 and in float64, and the two forms give
    the same gradients bit for bit. 72 channels: chunks of 64 and 8; 144 in two deformable
    groups: 72 each; 200: four chunks. Another call between the forward and the backward
    overwrites the kernel's scratch, so that the backward cannot lean on columns a forward left
    there."""
    args, kw = make_case(2, c, 16, 9, 11, 3, padding=1, dg=dg, seed=13)
    other, _ = make_case(2, c, 16, 9, 11, 3, padding=1, dg=dg, seed=15)
    grad_out = torch.randn(2, 16, 9, 11, generator=torch.Generator().manual_seed(14),
                           dtype=torch.float64)  # fmt: skip
    ref_leaves = [a.clone().requires_grad_() for a in args]
    call_reference(ref_leaves, kw).backward(grad_out)
    names = ["input", "offset", "mask", "weight", "bias"]
    threads = torch.get_num_threads()
    try:
        for dtype, rtol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
            by_threads = []
            for t in (1, 5):
                torch.set_num_threads(t)
                leaves = [a.to(dtype, copy=True).requires_grad_() for a in args]
                out = modulated_deform_conv2d(*leaves, **kw)
                modulated_deform_conv2d(*[a.to(dtype) for a in other], **kw)
                out.backward(grad_out.to(dtype))
                grads = [a.grad for a in leaves]
                by_threads.append(grads)
                for name, g, r in zip(names, grads, ref_leaves):
                    scale = r.grad.abs().max().item()
                    torch.testing.assert_close(g.double(), r.grad, rtol=rtol,
                                               atol=rtol * 0.1 * scale,
                                               msg=f"{dtype}, {t} threads: {name}")  # fmt: skip
            # the weight gradient's GEMM may block by thread count: the sampling results may not
            for name, one, five in list(zip(names, *by_threads))[:3]:
                assert torch.equal(one, five), f"{dtype}: {name} differs between 1 and 5 threads"
    finally:
        torch.set_num_threads(threads)


FUSED_CASES = [  # each register blocking of im2col_gemm, with a tail block of rows
    dict(n=2, c=16, cout=16, h=9, w=11, k=3, padding=1),  # 1 vector of C_out, 24 rows a block
    dict(n=3, c=32, cout=32, h=7, w=10, k=3, stride=2, padding=1),  # 2 vectors, 12 rows
    dict(n=1, c=32, cout=48, h=6, w=13, k=3, padding=2, dilation=2, dg=2),  # 3, 8; 16 ch per dg
    dict(n=2, c=16, cout=64, h=5, w=7, k=(3, 1), padding=(1, 0), bias=False),  # 4, 6
    dict(n=2, c=16, cout=80, h=4, w=5, k=3, padding=1, modulated=False),  # 5 passes of 1 vector
    dict(n=1, c=48, cout=128, h=9, w=9, k=3, padding=1),  # 2 passes of 4 vectors
]


@pytest.mark.parametrize("cfg", FUSED_CASES)
def test_cpu_fused_forward_matches_float64(cfg):
    """Where the AVX-512 loops run, the float32 forward of a layer of one conv group whose output
    channels and channels per deformable group are multiples of 16 runs fused (sampling and GEMM
    per block of output positions, `_ext.cpu_fused_forward()`): it matches the float64 result
    (the column path) to float32 rounding and the column path's float32 output (turned off and
    on again here), is bit-identical across thread counts, and a channels-last input gives the
    same output channels-last."""
    if not _ext.cpu_fused_forward():
        pytest.skip(f"the fused forward runs with the AVX-512 loops only; here: {_ext.cpu_isa()}")
    args, kw = make_case(**cfg, seed=11)
    ref = call_reference(args, kw)
    x, offset, mask, weight, bias = [a.float() if a is not None else None for a in args]
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    try:
        _ext.set_cpu_fused_forward(False)
        assert not _ext.cpu_fused_forward()
        columns = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
    finally:
        _ext.set_cpu_fused_forward(True)
    assert _ext.cpu_fused_forward()
    torch.testing.assert_close(out, columns, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            again = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
            assert torch.equal(again, out), f"{t} threads"
    finally:
        torch.set_num_threads(threads)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out_cl = modulated_deform_conv2d(x_cl, offset, mask, weight, bias, **kw)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out_cl, out)


def test_cpu_fused_forward_leaves_other_layers_to_the_columns():
    """Layers the fused forward does not take (24 output channels, two conv groups, 8 channels
    per deformable group, float64) run the column path whether it is on or off, bit for bit."""
    cases = [dict(n=2, c=16, cout=24, h=5, w=6, k=3, padding=1, dtype=torch.float32),
             dict(n=2, c=32, cout=32, h=5, w=6, k=3, padding=1, groups=2, dtype=torch.float32),
             dict(n=2, c=16, cout=16, h=5, w=6, k=3, padding=1, dg=2, dtype=torch.float32),
             dict(n=2, c=16, cout=16, h=5, w=6, k=3, padding=1)]  # fmt: skip
    for cfg in cases:
        args, kw = make_case(**cfg, seed=12)
        out = modulated_deform_conv2d(*args, **kw)
        try:
            _ext.set_cpu_fused_forward(False)
            columns = modulated_deform_conv2d(*args, **kw)
        finally:
            _ext.set_cpu_fused_forward(True)
        assert torch.equal(out, columns), cfg


def test_cpu_workspace_reuse_gives_fresh_results_and_releases():
    """The CPU kernel keeps its scratch (padded images, plan, column tiles, gradient buffers) per
    thread between calls (csrc/common/cpu_workspace.h). A call that follows larger ones, float32
    and float64, whose data fills those buffers, must give bit for bit what it gives with fresh
    buffers; the scratch is then as large as the largest call left it, and `release` frees it."""
    small, small_kw = make_case(2, 16, 8, 9, 11, 3, padding=1, dg=2, groups=2,
                                dtype=torch.float32, seed=5)  # fmt: skip
    big, big_kw = make_case(3, 64, 8, 60, 60, 3, padding=1, dg=2, dtype=torch.float32, seed=3)
    big64, big64_kw = make_case(2, 24, 8, 20, 30, 3, padding=1, seed=6)
    grad_out = torch.randn(2, 8, 9, 11, generator=torch.Generator().manual_seed(7))
    _ext.cpu_workspace_bytes(release=True)
    fresh_out, fresh_grads = _grads(small, small_kw, grad_out)
    assert _ext.cpu_workspace_bytes() > 0
    _grads(big, big_kw)
    _grads(big64, big64_kw)
    _grads(big, big_kw)
    held = _ext.cpu_workspace_bytes()
    out, grads = _grads(small, small_kw, grad_out)
    assert torch.equal(out, fresh_out)
    for name, g, f in zip(["input", "offset", "mask", "weight", "bias"], grads, fresh_grads):
        assert torch.equal(g, f), name
    assert _ext.cpu_workspace_bytes(release=True) == held
    assert _ext.cpu_workspace_bytes() == 0


ISA_CODE = """
import sys, torch
from detection import _ext
from detection.layers import modulated_deform_conv2d
sys.path.insert(0, sys.argv[2])
from test_deform_conv import make_case
args, kw = make_case(2, 40, 16, 9, 21, 3, padding=1, dg=2, groups=2, dtype=torch.float32)
leaves = [a.clone().requires_grad_() for a in args]
out = modulated_deform_conv2d(*leaves, **kw)
out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
fused_args, fused_kw = make_case(2, 32, 48, 7, 9, 3, padding=1, dg=2, dtype=torch.float32)
fused = modulated_deform_conv2d(*fused_args, **fused_kw)
torch.save([out.detach()] + [a.grad for a in leaves] + [fused], sys.argv[1])
print(_ext.cpu_fused_forward(), _ext.cpu_backward_gemm(), _ext.cpu_isa())
"""


@pytest.mark.parametrize("isa", ["default", "avx2", "avx512"])
def test_cpu_isa_variants_match_float64(isa, tmp_path):
    """The CPU sampling loops are compiled for the baseline ISA, AVX2 and AVX-512 and picked at
    run time following ATEN_CPU_CAPABILITY: each variant, run in its own process, must match the
    float64 result (computed here) to float32 rounding. 40 input and 16 output channels over rows
    of 21 pixels: the layout copies (csrc/common/cpu_layout.h) take their in-register transposes of
    16 x 16 blocks (AVX2, AVX-512) and their scalar tails. A float32 forward of 32 -> 48 channels
    runs fused with the AVX2 and the AVX-512 loops (8- and 16-float vectors) and through the
    columns with the baseline's."""
    root = os.path.dirname(os.path.dirname(DATA))
    env = {**os.environ, "PYTHONPATH": root, "ATEN_CPU_CAPABILITY": isa, "OMP_NUM_THREADS": "1"}
    path = tmp_path / "grads.pt"
    cmd = [sys.executable, "-c", ISA_CODE, str(path), os.path.dirname(__file__)]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    gemm = res.stdout.split()[-2]
    # oneDNN's backward GEMMs only beside the AVX-512 loops (on a CPU that is not Intel's), and
    # the fused forward with the AVX2 and AVX-512 loops only
    assert gemm == "blas" or (gemm == "onednn" and res.stdout.split()[-1] == "avx512"), res.stdout
    assert (res.stdout.split()[-3] == "True") == (res.stdout.split()[-1] != "default"), res.stdout
    if res.stdout.split()[-1] != isa:
        pytest.skip(f"this CPU (or this build) has no {isa} variant: ran {res.stdout.split()[-1]}")
    got = torch.load(path)
    args, kw = make_case(2, 40, 16, 9, 21, 3, padding=1, dg=2, groups=2, dtype=torch.float32)
    leaves = [a.double().requires_grad_() for a in args]
    out = modulated_deform_conv2d(*leaves, **kw)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=torch.float32)).double().view_as(out))
    fused_args, fused_kw = make_case(2, 32, 48, 7, 9, 3, padding=1, dg=2, dtype=torch.float32)
    fused = call_reference([a.double() for a in fused_args], fused_kw)
    for name, g, r in zip(["out", "input", "offset", "mask", "weight", "bias", "fused forward"],
                          got, [out.detach()] + [a.grad for a in leaves] + [fused]):  # fmt: skip
        scale = r.abs().max().item()
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5 * scale, msg=name)


# ---------------------------------------------------------------------------------------------
# The CUDA kernels, on every CUDA backend at hand (`cuda_backend`: the real GPU when visible, the
# CUDA emulation always): parity with the CPU kernel for every dtype, forward and backward ops.

CUDA_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}


def _op_params(kw, im2col_step=64):
    """The op's integer arguments after bias, from make_case's keyword arguments."""
    return (*_pair(kw["stride"]), *_pair(kw["padding"]), *_pair(kw["dilation"]), kw["groups"],
            kw["deform_groups"], im2col_step)  # fmt: skip


def _backend_grads(backend, args, kw, grad_out, dtype=None, im2col_step=64):
    """Output and (input, offset, mask, weight, bias) gradients from `backend`'s forward and
    backward ops, the arguments moved there (in `dtype`); None for an absent mask / bias."""
    x, offset, mask, weight, bias = [backend.to(a, dtype) for a in args]
    params = _op_params(kw, im2col_step)
    out = backend.ops.modulated_deform_conv2d(x, offset, mask, weight, bias, *params)
    grads = backend.ops._modulated_deform_conv2d_backward(
        backend.to(grad_out, dtype), x, offset, mask, weight, bias, *params
    )
    return out, [g if a is not None else None for g, a in zip(grads, args)]


@pytest.mark.parametrize("dtype", list(CUDA_TOL))
@pytest.mark.parametrize("cfg", CONFIGS)
def test_cuda_kernels_match_cpu(cuda_backend, cfg, dtype):
    args, kw = make_case(**cfg, scale=1.5)
    args = [a.to(dtype).double() if a is not None else None for a in args]  # representable
    out = modulated_deform_conv2d(*args, **kw)
    grad_out = torch.randn_like(out).to(dtype).double()
    out_cpu, grads_cpu = _grads(args, kw, grad_out)
    out, grads = _backend_grads(cuda_backend, args, kw, grad_out, dtype)
    tol = CUDA_TOL[dtype]
    assert out.dtype == dtype and out.device.type == cuda_backend.device.type
    scale = out_cpu.abs().max().item() + 1
    torch.testing.assert_close(out.double().cpu(), out_cpu, rtol=tol, atol=tol * scale)
    for name, g, gc in zip(["input", "offset", "mask", "weight", "bias"], grads, grads_cpu):
        assert (g is None) == (gc is None), name
        if g is None:
            continue
        assert g.dtype == dtype, name
        s = gc.abs().max().item() + 1
        torch.testing.assert_close(g.double().cpu(), gc, rtol=tol, atol=tol * s, msg=name)


@pytest.mark.parametrize("step", [1, 2])
def test_cuda_kernels_im2col_step_chunks_match_cpu(cuda_backend, step):
    """Batches longer than im2col_step go through several column chunks (pointer shifts per
    chunk, float64)."""
    args, kw = make_case(5, 4, 6, 7, 6, 3, padding=1, dg=2, groups=2)
    grad_out = torch.randn(5, 6, 7, 6, dtype=torch.float64)
    out_cpu, grads_cpu = _grads(args, kw, grad_out)
    out, grads = _backend_grads(cuda_backend, args, kw, grad_out, im2col_step=step)
    torch.testing.assert_close(out.cpu(), out_cpu, rtol=1e-10, atol=1e-10)
    for name, g, gc in zip(["input", "offset", "mask", "weight", "bias"], grads, grads_cpu):
        torch.testing.assert_close(g.cpu(), gc, rtol=1e-10, atol=1e-10, msg=name)


def test_cuda_kernels_empty_batch_zero_channels_and_non_contiguous(cuda_backend):
    # batch 0
    args, kw = make_case(0, 4, 6, 5, 5, 3, padding=1)
    out, grads = _backend_grads(
        cuda_backend, args, kw, torch.zeros(0, 6, 5, 5, dtype=torch.float64)
    )
    assert out.shape == (0, 6, 5, 5)
    assert all(g.shape == a.shape for g, a in zip(grads, args))
    # 0 input channels: every gradient is zero (offset and mask included), as on CPU
    args, kw = make_case(2, 0, 3, 5, 5, 3, padding=1)
    out, grads = _backend_grads(
        cuda_backend, args, kw, torch.randn(2, 3, 5, 5, dtype=torch.float64)
    )
    for name, g in zip(["input", "offset", "mask", "weight", "bias"], grads):
        if name != "bias":
            assert torch.count_nonzero(g) == 0, name
    # non-contiguous input, offset and grad_output: same as contiguous copies (grad_input to
    # rounding: its atomic adds run in another order)
    args, kw = make_case(2, 4, 6, 7, 8, 3, padding=1, dg=2)
    grad_out = torch.randn(2, 6, 7, 8, dtype=torch.float64)
    expected, expected_grads = _backend_grads(cuda_backend, args, kw, grad_out)
    x = args[0].contiguous(memory_format=torch.channels_last)
    offset = args[1].transpose(2, 3).contiguous().transpose(2, 3)
    grad_nc = grad_out.transpose(2, 3).contiguous().transpose(2, 3)
    assert not (x.is_contiguous() or offset.is_contiguous() or grad_nc.is_contiguous())
    out, grads = _backend_grads(cuda_backend, (x, offset, *args[2:]), kw, grad_nc)
    # a channels-last input gives a channels-last output and input gradient, as on the CPU
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for name, g, e in zip(["input", "offset", "mask", "weight", "bias"], grads, expected_grads):
        tol = 1e-12 if name == "input" else 0
        torch.testing.assert_close(g, e, rtol=tol, atol=tol, msg=name)


@pytest.mark.cuda
def test_cuda_autocast_and_reference_case():
    layer = ModulatedDeformConv2dPack(1, 1, (2, 2), padding=1, bias=False).cuda()
    layer.weight.data.fill_(1.0)
    case = _load("mmcv_modulated_deform_conv.json")
    x = torch.tensor(case["inputs"]["x"]["value"], device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        out = layer(x)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    _close(out.float().cpu(), case["expected"]["output"]["value"], 1e-2, 1e-8, "output")
    _close(x.grad.cpu(), case["expected"]["input_grad"]["value"], 1e-2, 1e-8, "input_grad")


@pytest.mark.cuda
def test_cuda_device_mismatch():
    args, kw = make_case(1, 2, 2, 4, 4, 3, padding=1)
    x, offset, mask, weight, b = args
    with pytest.raises(RuntimeError, match="offset"):
        modulated_deform_conv2d(x.cuda(), offset, mask.cuda(), weight.cuda(), b.cuda(), **kw)


@pytest.mark.cuda
def test_cuda_opcheck():
    args, kw = make_case(2, 2, 2, 4, 3, 3, padding=1, dg=2, scale=1.0)
    args = [a.cuda().requires_grad_() for a in args]
    params = (1, 1, 1, 1, 1, 1, 1, 2, 64)
    torch.library.opcheck(torch.ops.detection.modulated_deform_conv2d.default, (*args, *params))
    grad = torch.randn(2, 2, 4, 3, dtype=torch.float64, device="cuda")
    plain = [a.detach() for a in args]
    torch.library.opcheck(
        torch.ops.detection._modulated_deform_conv2d_backward.default, (grad, *plain, *params)
    )
    # a channels-last input: channels-last output and grad_input, the fakes' strides the same
    cl = [args[0].detach().to(memory_format=torch.channels_last).requires_grad_(), *args[1:]]
    torch.library.opcheck(torch.ops.detection.modulated_deform_conv2d.default, (*cl, *params))
    torch.library.opcheck(
        torch.ops.detection._modulated_deform_conv2d_backward.default,
        (grad, cl[0].detach(), *plain[1:], *params),
    )


@pytest.mark.cuda
def test_cuda_compile_under_autocast():
    torch._dynamo.reset()
    layer = DeformConv2d(2, 3, 3, padding=1).cuda()
    x = torch.randn(1, 2, 6, 5, device="cuda", requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(x)
        eager = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, eager)
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
