"""modulated_deform_roi_pool: published mmcv cases, a naive float64 reference, gradcheck,
edge cases (RoIs outside the map, degenerate/zero RoIs, several images), the Pack modules,
opcheck and error messages. Over 350 lines: the naive float64 reference and its gradients live
here, with every test that uses them."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from detection import _ext
from detection.layers import (
    DeformRoIPoolPack,
    ModulatedDeformRoIPool,
    ModulatedDeformRoIPoolPack,
    modulated_deform_roi_pool,
    roi_align,
)

pytestmark = pytest.mark.skipif(not _ext.HAS_OPS, reason="detection._C not built")

DATA = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mmcv_deform_roi_pool.json")


def _load_reference():
    with open(DATA) as f:
        return json.load(f)


def _t(value, dtype=torch.float64):
    return torch.tensor(value, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Naive float64 reference, written from the op semantics (one sample at a time).


def _axis(size, v):
    """(low, high, weight_low, weight_high, valid) for one coordinate, RoIAlign clamping rule."""
    if v < -1.0 or v > size:
        return 0, 0, 0.0, 0.0, False
    v = max(v, 0.0)
    low = int(math.floor(v))
    if low >= size - 1:
        low = high = size - 1
        v = float(low)
    else:
        high = low + 1
    frac = v - low
    return low, high, 1.0 - frac, frac, True


def reference_pool(input, rois, offset, mask, ph, pw, scale, sampling_ratio, gamma, grad=None):
    """Output [R, C, ph, pw]; with `grad` also (grad_input, grad_offset, grad_mask) using the
    reference operator's offset derivative (corner indices clamped, coordinate not)."""
    input = input.double()
    n_img, channels, height, width = input.shape
    num_rois = rois.shape[0]
    out = torch.zeros(num_rois, channels, ph, pw, dtype=torch.float64)
    g_in = torch.zeros_like(input)
    g_off = torch.zeros(num_rois, 2, ph, pw, dtype=torch.float64)
    g_mask = torch.zeros(num_rois, 1, ph, pw, dtype=torch.float64)
    for r in range(num_rois):
        b = int(rois[r, 0])
        x1, y1, x2, y2 = [float(v) * scale - 0.5 for v in rois[r, 1:]]
        roi_w, roi_h = x2 - x1, y2 - y1
        bin_w, bin_h = roi_w / pw, roi_h / ph
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw)
        count = max(gh * gw, 1)
        for i in range(ph):
            for j in range(pw):
                dx = gamma * roi_w * float(offset[r, 0, i, j]) if offset is not None else 0.0
                dy = gamma * roi_h * float(offset[r, 1, i, j]) if offset is not None else 0.0
                m = float(mask[r, 0, i, j]) if mask is not None else 1.0
                acc = torch.zeros(channels, dtype=torch.float64)
                gx = gy = 0.0
                for iy in range(gh):
                    y = y1 + dy + i * bin_h + (iy + 0.5) * bin_h / gh
                    yl, yh, why, wly, vy = _axis(height, y)
                    for ix in range(gw):
                        x = x1 + dx + j * bin_w + (ix + 0.5) * bin_w / gw
                        xl, xh, whx, wlx, vx = _axis(width, x)
                        if not (vy and vx):
                            continue
                        p = input[b]
                        corners = [
                            (yl, xl, why * whx),
                            (yl, xh, why * wlx),
                            (yh, xl, wly * whx),
                            (yh, xh, wly * wlx),
                        ]
                        for cy, cx, w in corners:
                            acc += w * p[:, cy, cx]
                        if grad is not None:
                            go = grad[r, :, i, j].double() * m / count
                            for cy, cx, w in corners:
                                g_in[b, :, cy, cx] += w * go
                            v_ll, v_lh, v_hl, v_hh = (
                                p[:, yl, xl],
                                p[:, yl, xh],
                                p[:, yh, xl],
                                p[:, yh, xh],
                            )
                            dvx = (
                                v_hh * (y - yl)
                                + v_lh * (yh - y)
                                + v_hl * (yl - y)
                                + v_ll * (y - yh)
                            )
                            dvy = (
                                v_hh * (x - xl)
                                + v_hl * (xh - x)
                                + v_lh * (xl - x)
                                + v_ll * (x - xh)
                            )
                            gx += float((go * dvx).sum())
                            gy += float((go * dvy).sum())
                out[r, :, i, j] = acc / count * m
                if grad is not None:
                    g_off[r, 0, i, j] = gamma * roi_w * gx
                    g_off[r, 1, i, j] = gamma * roi_h * gy
                    g_mask[r, 0, i, j] = float((grad[r, :, i, j].double() * acc / count).sum())
    if grad is None:
        return out
    return out, g_in, g_off, g_mask


def _random_rois(num_rois, n_img, height, width, scale=1.0, margin=0.0, seed=0):
    """Random (b, x1, y1, x2, y2) in image pixels; margin > 0 keeps boxes inside the map."""
    g = torch.Generator().manual_seed(seed)
    w_img, h_img = width / scale, height / scale
    lo = torch.tensor([margin / scale, margin / scale])
    hi = torch.tensor([w_img - margin / scale, h_img - margin / scale])
    p1 = lo + torch.rand(num_rois, 2, generator=g) * (hi - lo) * 0.6
    size = torch.rand(num_rois, 2, generator=g) * (hi - p1) * 0.9 + 0.3 / scale
    p2 = torch.minimum(p1 + size, hi)
    b = torch.randint(0, n_img, (num_rois, 1), generator=g).double()
    return torch.cat([b, p1.double(), p2.double()], dim=1)


def _pool(input, rois, offset=None, mask=None, ph=2, pw=2, scale=1.0, sr=2, gamma=0.1):
    return modulated_deform_roi_pool(
        input,
        rois,
        offset,
        mask,
        output_size=(ph, pw),
        spatial_scale=scale,
        sampling_ratio=sr,
        gamma=gamma,
    )


# ----------------------------------------------------------------------------------------------
# Published cases (tests/fixtures/mmcv_deform_roi_pool.json).

REF = _load_reference()
CASES = REF["cases"]
RTOL = REF["tolerance"]["rtol"]
ATOL = REF["tolerance"]["atol"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_published_cases_op(case, dtype):
    x = _t(case["input"]["value"], dtype).requires_grad_()
    rois = _t(case["rois"]["value"], dtype)
    out = _pool(x, rois, sr=2)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(
        out, _t(case["expected_output"]["value"], dtype), rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        x.grad, _t(case["expected_input_grad"]["value"], dtype), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_published_cases_pack_modules_at_init(case, modulated):
    x = _t(case["input"]["value"], torch.float32).requires_grad_()
    rois = _t(case["rois"]["value"], torch.float32)
    cls = ModulatedDeformRoIPoolPack if modulated else DeformRoIPoolPack
    module = cls(
        output_size=(2, 2),
        spatial_scale=1.0,
        sampling_ratio=2,
        gamma=0.1,
        in_channels=x.shape[1],
        fc_channels=1024,
    )
    out = module(x, rois)
    out.backward(torch.ones_like(out))
    if modulated:
        derived = case["derived_independently_not_upstream"]
        expected_out = derived["ModulatedDeformRoIPoolPack_at_init_output"]
        expected_grad = derived["ModulatedDeformRoIPoolPack_at_init_input_grad_ones"]
    else:
        expected_out = case["expected_output"]["value"]
        expected_grad = case["expected_input_grad"]["value"]
    torch.testing.assert_close(out, _t(expected_out, torch.float32), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(x.grad, _t(expected_grad, torch.float32), rtol=RTOL, atol=ATOL)


def test_published_nonzero_offset_example():
    example = REF["derived_independently_not_upstream_nonzero_offset_example"]
    case2 = next(c for c in CASES if c["name"] == "case2")
    x = _t(case2["input"]["value"]).requires_grad_()
    rois = _t(case2["rois"]["value"])
    offset = _t(example["offset"]["value"])
    out = _pool(x, rois, offset, sr=2, gamma=0.1)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(out, _t(example["output"]), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(x.grad, _t(example["input_grad"]), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# Against the naive reference.


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_reference_random_offsets_and_masks(seed, sampling_ratio):
    g = torch.Generator().manual_seed(seed)
    n_img, channels, height, width, ph, pw, scale = 2, 3, 9, 11, 3, 2, 0.5
    x = torch.randn(n_img, channels, height, width, generator=g, dtype=torch.float64)
    # boxes reaching up to ~2 px outside the map so that both boundary rules are exercised
    rois = _random_rois(6, n_img, height + 4, width + 4, scale=scale, seed=seed)
    rois[:, 1:] -= 2.0 / scale
    offset = torch.randn(6, 2, ph, pw, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 1, ph, pw, generator=g, dtype=torch.float64)
    grad = torch.randn(6, channels, ph, pw, generator=g, dtype=torch.float64)
    expected = reference_pool(x, rois, offset, mask, ph, pw, scale, sampling_ratio, 0.3, grad)
    x.requires_grad_()
    offset.requires_grad_()
    mask.requires_grad_()
    out = _pool(x, rois, offset, mask, ph, pw, scale, sampling_ratio, 0.3)
    got = (out,) + torch.autograd.grad(out, (x, offset, mask), grad)
    for name, a, b in zip(("output", "grad_input", "grad_offset", "grad_mask"), got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


def test_float32_matches_float64():
    x = torch.randn(2, 4, 10, 12)
    rois = _random_rois(5, 2, 10, 12, seed=3)
    offset = torch.randn(5, 2, 3, 3) * 0.5
    mask = torch.rand(5, 1, 3, 3)
    out32 = _pool(x, rois.float(), offset, mask, 3, 3, sr=0)
    out64 = _pool(x.double(), rois, offset.double(), mask.double(), 3, 3, sr=0)
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


def test_zero_offset_no_mask_equals_roi_align_aligned():
    x = torch.randn(2, 5, 13, 17, dtype=torch.float64)
    rois = _random_rois(7, 2, 26, 34, scale=0.5, seed=4)
    for sr in (0, 1, 2):
        ours = _pool(x, rois, None, None, 4, 3, 0.5, sr)
        zero = _pool(x, rois, torch.zeros(7, 2, 4, 3, dtype=torch.float64), None, 4, 3, 0.5, sr)
        expected = roi_align(x, rois, (4, 3), 0.5, sr, aligned=True)
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
        torch.testing.assert_close(zero, expected, rtol=0, atol=0)


def test_mask_multiplies_each_bin():
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    rois = _random_rois(4, 1, 8, 8, seed=5)
    offset = torch.randn(4, 2, 2, 3, dtype=torch.float64) * 0.3
    mask = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    plain = _pool(x, rois, offset, None, 2, 3)
    masked = _pool(x, rois, offset, mask, 2, 3)
    torch.testing.assert_close(masked, plain * mask, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck_input_offset_mask(seed):
    g = torch.Generator().manual_seed(seed)
    # RoIs well inside the map and small offsets: no sample in the clamped border band (where the
    # reference operator's offset derivative is extrapolated, not exact).
    x = torch.randn(2, 2, 10, 10, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(3, 2, 10, 10, margin=2.5, seed=seed)
    offset = (torch.rand(3, 2, 2, 2, generator=g, dtype=torch.float64) - 0.5) * 0.4
    mask = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64)
    offset.requires_grad_()
    mask.requires_grad_()

    def f(x, offset, mask):
        return _pool(x, rois, offset, mask, 2, 2, 1.0, 2, 0.1)

    assert torch.autograd.gradcheck(f, (x, offset, mask), eps=1e-6, atol=1e-7)


def test_double_backward_raises():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(2, 1, 6, 6, seed=1)
    out = _pool(x, rois)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


# ----------------------------------------------------------------------------------------------
# The instruction-set variants of the CPU loops.

ISA_CODE = """
import sys, torch
from detection import _ext
from detection.layers import modulated_deform_roi_pool
x, rois, offset, mask = [t.requires_grad_(t.is_floating_point() and t.dim() == 4)
                         for t in torch.load(sys.argv[1])]
out = modulated_deform_roi_pool(x, rois, offset, mask, output_size=(3, 4), sampling_ratio=2)
out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))
torch.save([out.detach(), x.grad, offset.grad, mask.grad], sys.argv[2])
print(_ext.cpu_isa())
"""


def test_cpu_isa_variants_agree_with_the_baseline(tmp_path):
    """The channel loops are compiled for the baseline ISA, AVX2 and AVX-512 without FMA
    contraction and picked at run time following ATEN_CPU_CAPABILITY: each variant, run in its own
    process, gives the baseline's output, input gradient and offset and mask gradients bit for bit
    (the channel sums of the latter in lanes of a fixed order, common/cpu_lanes.inc; 40 channels:
    two full blocks of lanes and a tail)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # the inputs made here: ATen's random generators round by its ISA too
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(24, 2, generator=g) * torch.tensor([13.0, 11.0]) - 2
    wh = torch.rand(24, 2, generator=g) * 8
    inputs = [
        torch.randn(2, 40, 9, 21, generator=g),  # channels 16 + 16 + 8, pixels 16 + 5 per row
        torch.cat([torch.randint(0, 2, (24, 1), generator=g).float(), xy, xy + wh], 1),
        torch.randn(24, 2, 3, 4, generator=g) * 0.3,
        torch.rand(24, 1, 3, 4, generator=g),
    ]
    torch.save(inputs, tmp_path / "inputs.pt")
    results = {}
    for isa in ("default", "avx2", "avx512"):
        env = {**os.environ, "PYTHONPATH": root, "ATEN_CPU_CAPABILITY": isa, "OMP_NUM_THREADS": "1"}
        path = tmp_path / f"{isa}.pt"
        cmd = [sys.executable, "-c", ISA_CODE, str(tmp_path / "inputs.pt"), str(path)]
        res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        if res.stdout.split()[-1] == isa:
            results[isa] = torch.load(path)
    assert "default" in results
    if len(results) == 1:
        pytest.skip("this CPU (or this build) has only the baseline variant")
    base = results["default"]
    assert base[0].abs().sum() > 0 and base[2].abs().sum() > 0  # samples inside the map
    for isa, got in results.items():
        for name, g, b in zip(["out", "input", "offset", "mask"], got, base):
            assert torch.equal(g, b), f"{isa}: {name}"


# ----------------------------------------------------------------------------------------------
# Edge cases.


def test_rois_partly_and_fully_outside_the_map():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    rois = torch.tensor(
        [
            [0, -3.0, -2.0, 2.0, 3.0],
            [0, 4.0, 3.0, 12.0, 9.0],
            [0, 20.0, 20.0, 30.0, 25.0],
            [0, -30.0, -30.0, -20.0, -25.0],
        ],
        dtype=torch.float64,
    )
    offset = torch.randn(4, 2, 2, 2, dtype=torch.float64)
    out = _pool(x, rois, offset, None, 2, 2, 1.0, 0)
    torch.testing.assert_close(out, reference_pool(x, rois, offset, None, 2, 2, 1.0, 0, 0.1))
    plain = _pool(x, rois, None, None, 2, 2, 1.0, 0)
    assert torch.all(plain[2:] == 0)


def test_degenerate_zero_size_rois():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2.0, 2.0, 2.0, 2.0], [0, 3.3, 1.0, 3.3, 4.0]], dtype=torch.float64)
    out = _pool(x, rois, None, None, 2, 2, 1.0, 0)  # adaptive grid of 0 samples: bins are 0
    assert torch.all(out[0] == 0)
    torch.testing.assert_close(out, reference_pool(x, rois, None, None, 2, 2, 1.0, 0, 0.1))
    out2 = _pool(x, rois, None, None, 2, 2, 1.0, 2)  # fixed grid: all samples at one point
    torch.testing.assert_close(out2, reference_pool(x, rois, None, None, 2, 2, 1.0, 2, 0.1))
    out2.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_zero_rois():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    offset = torch.zeros(0, 2, 2, 2, requires_grad=True)
    mask = torch.zeros(0, 1, 2, 2, requires_grad=True)
    out = _pool(x, torch.zeros(0, 5), offset, mask)
    assert out.shape == (0, 3, 2, 2)
    out.sum().backward()
    assert torch.all(x.grad == 0) and offset.grad.shape == (0, 2, 2, 2)
    module = ModulatedDeformRoIPoolPack((2, 2), 1.0, 2, 0.1, in_channels=3, fc_channels=8)
    assert module(x, torch.zeros(0, 5)).shape == (0, 3, 2, 2)


def test_many_rois_several_images_and_list_input():
    x = torch.randn(3, 4, 12, 10, dtype=torch.float64)
    rois = _random_rois(40, 3, 24, 20, scale=0.5, seed=7)
    offset = torch.randn(40, 2, 3, 3, dtype=torch.float64) * 0.2
    mask = torch.rand(40, 1, 3, 3, dtype=torch.float64)
    out = _pool(x, rois, offset, mask, 3, 3, 0.5, 2)
    for r in range(40):  # each RoI equals pooling its own image alone
        b = int(rois[r, 0])
        single = rois[r : r + 1].clone()
        single[0, 0] = 0
        alone = _pool(x[b : b + 1], single, offset[r : r + 1], mask[r : r + 1], 3, 3, 0.5, 2)
        torch.testing.assert_close(out[r : r + 1], alone, rtol=0, atol=0)
    order = torch.argsort(rois[:, 0], stable=True)
    as_list = [rois[rois[:, 0] == i, 1:] for i in range(3)]
    listed = _pool(x, as_list, offset[order], mask[order], 3, 3, 0.5, 2)
    torch.testing.assert_close(listed, out[order], rtol=0, atol=0)


def test_plain_module_matches_function():
    x = torch.randn(1, 2, 8, 8)
    rois = _random_rois(3, 1, 8, 8, seed=2).float()
    offset = torch.randn(3, 2, 2, 2) * 0.1
    module = ModulatedDeformRoIPool((2, 2), spatial_scale=1.0, sampling_ratio=2, gamma=0.2)
    torch.testing.assert_close(module(x, rois, offset), _pool(x, rois, offset, gamma=0.2))


def test_pack_module_structure_and_offset_lr_names():
    module = ModulatedDeformRoIPoolPack((7, 7), 0.25, 2, 0.1, in_channels=4, fc_channels=16)
    assert [type(m).__name__ for m in module.offset_fc] == [
        "Linear",
        "ReLU",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert [type(m).__name__ for m in module.mask_fc] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    assert module.offset_fc[0].in_features == 7 * 7 * 4 and module.offset_fc[4].out_features == 98
    assert module.mask_fc[2].out_features == 49
    for last in (module.offset_fc[4], module.mask_fc[2]):
        assert torch.all(last.weight == 0) and torch.all(last.bias == 0)
    names = [n for n, _ in module.named_parameters()]
    assert names and all("offset_fc" in n or "mask_fc" in n for n in names)


def test_pack_module_gradients_reach_the_fc_branches():
    module = ModulatedDeformRoIPoolPack((2, 2), 1.0, 2, 0.1, in_channels=2, fc_channels=8)
    x = torch.randn(1, 2, 8, 8)
    rois = _random_rois(3, 1, 8, 8, margin=1.5, seed=9).float()
    module(x, rois).square().sum().backward()
    assert module.offset_fc[4].weight.grad.abs().sum() > 0
    assert module.mask_fc[2].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Registration and errors.


def test_opcheck():
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(4, 2, 8, 9, seed=11)
    offset = (torch.randn(4, 2, 2, 2, dtype=torch.float64) * 0.1).requires_grad_()
    mask = torch.rand(4, 1, 2, 2, dtype=torch.float64).requires_grad_()
    op = torch.ops.detection.modulated_deform_roi_pool.default
    torch.library.opcheck(op, (x, rois, offset, mask, 2, 2, 1.0, 2, 0.1))
    torch.library.opcheck(op, (x, rois, None, None, 2, 2, 1.0, 0, 0.1))
    grad = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    backward = torch.ops.detection._modulated_deform_roi_pool_backward.default
    torch.library.opcheck(
        backward, (grad, x.detach(), rois, offset.detach(), mask.detach(), 2, 2, 1.0, 2, 0.1)
    )


def test_autocast_runs_in_float32():
    x = torch.randn(1, 2, 6, 6, dtype=torch.bfloat16)
    rois = _random_rois(2, 1, 6, 6, seed=1).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _pool(x, rois)
    assert out.dtype == torch.float32


def test_bad_input_raises_clear_errors():
    x = torch.randn(2, 2, 6, 6)
    good = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="rois"):
        _pool(x, torch.tensor([[1.0, 1.0, 4.0, 4.0]]))
    with pytest.raises(RuntimeError, match=r"rois\[:, 0\] \(batch index\)"):
        _pool(x, torch.tensor([[2, 1.0, 1.0, 4.0, 4.0]]))
    with pytest.raises(RuntimeError, match="batch index"):
        _pool(x, torch.tensor([[-1, 1.0, 1.0, 4.0, 4.0]]))
    with pytest.raises(RuntimeError, match="offset must have shape"):
        _pool(x, good, torch.zeros(1, 2, 3, 3))
    with pytest.raises(RuntimeError, match="mask must have input's dtype"):
        _pool(x, good, None, torch.zeros(1, 1, 2, 2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input must be a 4-D"):
        _pool(x[0], good)
    with pytest.raises(RuntimeError, match="rois must be a floating point"):
        _pool(x, good.long())


# ----------------------------------------------------------------------------------------------
# The CUDA kernels, on every CUDA backend at hand (`cuda_backend`: the real GPU when visible, the
# CUDA emulation always): forward and backward ops against the CPU kernel.


@pytest.mark.parametrize("parts", ["offset+mask", "offset", "mask", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernels_match_cpu(cuda_backend, dtype, parts):
    x = torch.randn(2, 5, 11, 13, dtype=dtype)
    rois = _random_rois(20, 2, 22, 26, scale=0.5, seed=12).to(dtype)
    rois[:, 1:] -= 2.0
    offset = torch.randn(20, 2, 3, 3, dtype=dtype) * 0.3 if "offset" in parts else None
    mask = torch.rand(20, 1, 3, 3, dtype=dtype) if "mask" in parts else None
    grad = torch.randn(20, 5, 3, 3, dtype=dtype)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, offset, mask)]
    out_cpu = _pool(leaves[0], rois, leaves[1], leaves[2], 3, 3, 0.5, 0, 0.1)
    names = [n for n, t in zip(["x", "offset", "mask"], leaves) if t is not None]
    wrt = [t for t in leaves if t is not None]
    grads_cpu = dict(zip(names, torch.autograd.grad(out_cpu, wrt, grad)))
    b = cuda_backend
    args = [b.to(t) for t in (x, rois, offset, mask)]
    out = b.ops.modulated_deform_roi_pool(*args, 3, 3, 0.5, 0, 0.1)
    grads = b.ops._modulated_deform_roi_pool_backward(b.to(grad), *args, 3, 3, 0.5, 0, 0.1)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out.cpu(), out_cpu.detach(), rtol=tol, atol=tol)
    for name, g in zip(["x", "offset", "mask"], grads):
        if name in grads_cpu:
            torch.testing.assert_close(g.cpu(), grads_cpu[name], rtol=tol, atol=tol, msg=name)
        else:  # absent offset / mask: an empty gradient
            assert g.numel() == 0, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_kernels_half_matches_float(cuda_backend, dtype):
    b = cuda_backend
    x = torch.randn(2, 4, 10, 10)
    rois = _random_rois(10, 2, 10, 10, seed=13).float()
    offset = torch.randn(10, 2, 2, 2) * 0.2
    mask = torch.rand(10, 1, 2, 2)
    grad = torch.randn(10, 4, 2, 2)
    params = (2, 2, 1.0, 2, 0.1)
    ref = b.ops.modulated_deform_roi_pool(*[b.to(t) for t in (x, rois, offset, mask)], *params)
    ref_grads = b.ops._modulated_deform_roi_pool_backward(
        b.to(grad), *[b.to(t) for t in (x, rois, offset, mask)], *params
    )
    half = [b.to(t, dtype) for t in (x, offset, mask)]
    out = b.ops.modulated_deform_roi_pool(half[0], b.to(rois), half[1], half[2], *params)
    grads = b.ops._modulated_deform_roi_pool_backward(
        b.to(grad, dtype), half[0], b.to(rois), half[1], half[2], *params
    )
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    for name, g, r in zip(["x", "offset", "mask"], grads, ref_grads):
        assert g.dtype == dtype, name
        scale = r.abs().max().item() + 1
        torch.testing.assert_close(g.float(), r, rtol=3e-2, atol=3e-2 * scale, msg=name)


def test_cuda_kernels_empty_zero_channels_and_non_contiguous(cuda_backend):
    """No RoIs, zero channels and non-contiguous input / offset / mask / grad on the CUDA
    kernels, forward and backward ops, against the CPU op (float64)."""
    b = cuda_backend
    cpu = torch.ops.detection
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    rois = _random_rois(6, 2, 10, 9, seed=4)
    offset = torch.randn(6, 2, 3, 2, dtype=torch.float64) * 0.2
    mask = torch.rand(6, 1, 3, 2, dtype=torch.float64)

    def nc(t):  # same values, transposed strides
        return t.transpose(2, 3).contiguous().transpose(2, 3)

    cases = [
        (x, rois[:0], offset[:0], mask[:0]),  # no RoIs
        (x[:, :0], rois, offset, mask),  # zero channels
        (nc(x), rois, nc(offset), nc(mask)),  # non-contiguous
    ]
    params = (3, 2, 1.0, 2, 0.1)
    for i, args in enumerate(cases):
        expected = cpu.modulated_deform_roi_pool(*args, *params)
        out = b.ops.modulated_deform_roi_pool(*[b.to(t) for t in args], *params)
        assert out.shape == expected.shape, i
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-12, atol=1e-12, msg=str(i))
        grad = nc(torch.randn(expected.shape, dtype=torch.float64))
        g_cpu = cpu._modulated_deform_roi_pool_backward(grad, *args, *params)
        g = b.ops._modulated_deform_roi_pool_backward(b.to(grad), *[b.to(t) for t in args],
                                                      *params)  # fmt: skip
        for name, a, e in zip(["input", "offset", "mask"], g, g_cpu):
            assert a.shape == e.shape, (i, name)
            torch.testing.assert_close(a.cpu(), e, rtol=1e-12, atol=1e-12, msg=f"{i} {name}")
