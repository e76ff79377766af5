"""Property-based tests (hypothesis) of every op over random shapes and parameters (over 350
lines: one strategy module shared by the four ops' properties). References
(F.conv2d at zero offset, torchvision's roi_align and nms, a greedy float64 NMS), empty inputs,
extreme and non-finite offsets, non-contiguous views, mixed/integer dtypes and devices.

Conventions checked (CONVENTIONS.md): a deformable sample outside the band (-1, H) x (-1, W) --
including NaN, +-inf and 1e30 offsets -- reads 0; so does a RoI-pooling sample outside
[-1, H] x [-1, W]. Bad input raises RuntimeError/ValueError naming the argument.

Cases that used to crash the process (segfault) run once in a subprocess first, so that a library
built before the fix fails those tests instead of killing pytest.
"""

import os
import subprocess
import sys
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest
import torch
import torch.nn.functional as F
import torchvision

from detection import _ext
from detection.layers import (
    batched_nms,
    modulated_deform_conv2d,
    modulated_deform_roi_pool,
    nms,
    roi_align,
)

pytestmark = pytest.mark.skipif(not _ext.HAS_OPS, reason="detection._C not built")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BAD = (RuntimeError, ValueError)
EXTREME = (float("nan"), float("inf"), float("-inf"), 1e30, -1e30)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _sprinkle(t, frac_seed, values=EXTREME, all_=False):
    """`t` with a random subset (or all) of its entries replaced by values from `values`."""
    g = _gen(frac_seed)
    pick = torch.randint(0, len(values), t.shape, generator=g)
    where = (
        torch.ones(t.shape, dtype=torch.bool) if all_ else torch.rand(t.shape, generator=g) < 0.3
    )
    out = t.clone()
    for i, v in enumerate(values):
        out[where & (pick == i)] = v
    return out


# ---------------------------------------------------------------------------------------------
# crash regressions, each in a fresh process


def _run_isolated(code):
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT},
    )
    return res.returncode, res.stdout + res.stderr


NAN_OFFSET_POOL = """
    import torch
    from detection.layers import modulated_deform_roi_pool
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]])
    off = torch.full((1, 2, 2, 2), float("nan"))
    out = modulated_deform_roi_pool(x, rois, off, output_size=2, sampling_ratio=2)
    assert torch.equal(out, torch.zeros_like(out)), out
    print("OK")
"""

NAN_ROI_ALIGN = """
    import torch
    from detection.layers import roi_align
    x = torch.randn(1, 2, 8, 8)
    for sr in (2, 0):
        for bad in (float("nan"), float("inf"), -float("inf")):
            rois = torch.tensor([[0, bad, 1.0, 6.0, 6.0]])
            try:
                roi_align(x, rois, 2, sampling_ratio=sr)
            except RuntimeError as e:
                assert "rois must be finite" in str(e), e
            else:
                raise AssertionError("no error for rois with %r" % bad)
    print("OK")
"""


@pytest.fixture(scope="module")
def nan_safe_library():
    """Whether the compiled library survives NaN offsets/RoIs (fixed in roi_common); the
    in-process non-finite RoI-pooling properties need it."""
    rc, out = _run_isolated(NAN_OFFSET_POOL)
    if rc != 0 or "OK" not in out:
        pytest.fail(
            f"NaN deformable-pooling offsets crash this build (exit {rc}); rebuild the "
            f"library (python setup.py build_ext --inplace): {out[-400:]}"
        )


def test_nan_pooling_offset_reads_zero_not_out_of_bounds():
    """NaN offsets used to cast NaN to int in the sampler and read outside the input (SIGSEGV)."""
    rc, out = _run_isolated(NAN_OFFSET_POOL)
    assert rc == 0 and "OK" in out, f"exit {rc}: {out[-600:]}"


def test_non_finite_rois_raise_instead_of_crashing():
    """NaN/inf RoIs used to segfault (sampling_ratio > 0) or fail inside std::vector (adaptive)."""
    rc, out = _run_isolated(NAN_ROI_ALIGN)
    assert rc == 0 and "OK" in out, f"exit {rc}: {out[-600:]}"


def test_inverted_box_with_adaptive_sampling_reads_zero():
    """An inverted box (y2 < y1) with sampling_ratio 0 used to size the sample tables from a
    negative grid (std::length_error 'vector::_M_default_append'; torchvision's CPU roi_align
    fails the same way). Convention: no samples, the average over count 1 is 0."""
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    rois = torch.tensor([[0, 0.1344, 4.2867, 1.8052, 3.1203]], dtype=torch.float64)
    zero = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(roi_align(x, rois, 1, 1.0, 0, True), zero, rtol=0, atol=0)
    out = modulated_deform_roi_pool(x, rois, None, None, output_size=1, sampling_ratio=0)
    torch.testing.assert_close(out, zero, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# modulated_deform_conv2d


@st.composite
def dcn_problems(draw, batch=st.integers(0, 2)):
    n = draw(batch)
    groups = draw(st.sampled_from([1, 2]))
    dg = draw(st.sampled_from([1, 2]))
    c = groups * dg * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 2, 3]))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(max(1, dil[0] * (kh - 1) + 1 - 2 * pad[0]), 6))
    w = draw(st.integers(max(1, dil[1] * (kw - 1) + 1 - 2 * pad[1]), 6))
    ho = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    dt = torch.float64
    t = dict(
        input=torch.randn(n, c, h, w, generator=g, dtype=dt),
        offset=torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=dt) * 2,
        mask=torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=dt),
        weight=torch.randn(cout, c // groups, kh, kw, generator=g, dtype=dt),
        bias=torch.randn(cout, generator=g, dtype=dt),
    )
    kw_ = dict(stride=stride, padding=pad, dilation=dil, groups=groups, deform_groups=dg)
    return t, kw_


def _dcn(t, kw, **override):
    a = {**t, **override}
    return modulated_deform_conv2d(a["input"], a["offset"], a["mask"], a["weight"], a["bias"], **kw)


@SETTINGS
@given(dcn_problems())
def test_dcn_zero_offset_unit_mask_is_conv2d(problem):
    t, kw = problem
    out = _dcn(t, kw, offset=torch.zeros_like(t["offset"]), mask=torch.ones_like(t["mask"]))
    ref = F.conv2d(
        t["input"],
        t["weight"],
        t["bias"],
        kw["stride"],
        kw["padding"],
        kw["dilation"],
        kw["groups"],
    )
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(dcn_problems(batch=st.integers(1, 2)), st.integers(0, 2**31 - 1), st.booleans())
def test_dcn_extreme_offsets_finite_and_outside_reads_zero(problem, seed, all_extreme):
    t, kw = problem
    offset = _sprinkle(t["offset"], seed, all_=all_extreme)
    inputs = {k: v.clone().requires_grad_() for k, v in t.items()}
    inputs["offset"] = offset.clone().requires_grad_()
    out = _dcn(inputs, kw)
    assert torch.isfinite(out).all()
    if all_extreme:
        # every sample is outside the band (or NaN): only the bias remains
        expected = t["bias"].view(1, -1, 1, 1).expand_as(out)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.backward(torch.ones_like(out))
    for name, v in inputs.items():
        assert torch.isfinite(v.grad).all(), name


@SETTINGS
@given(dcn_problems(), st.sampled_from(["input", "offset", "mask", "weight"]))
def test_dcn_non_contiguous_views_match_contiguous(problem, which):
    t, kw = problem
    ref = _dcn(t, kw)
    v = t[which]
    # the same values behind a transposed view and behind a strided slice
    transposed = v.transpose(-1, -2).contiguous().transpose(-1, -2)
    wide = torch.zeros(*v.shape[:-1], 2 * v.shape[-1], dtype=v.dtype)
    wide[..., ::2] = v
    strided = wide[..., ::2]
    for view in (transposed, strided):
        assert view.shape == v.shape
        torch.testing.assert_close(_dcn(t, kw, **{which: view}), ref, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(dcn_problems(batch=st.just(0)))
def test_dcn_empty_batch(problem):
    t, kw = problem
    inputs = {k: v.clone().requires_grad_() for k, v in t.items()}
    out = _dcn(inputs, kw)
    assert out.shape[0] == 0 and out.shape[1] == t["weight"].shape[0]
    out.sum().backward()
    assert torch.equal(inputs["weight"].grad, torch.zeros_like(t["weight"]))
    assert torch.equal(inputs["bias"].grad, torch.zeros_like(t["bias"]))


@SETTINGS
@given(dcn_problems(batch=st.integers(1, 2)), st.sampled_from(["offset", "mask", "weight", "bias"]))
def test_dcn_mixed_dtypes_raise_naming_the_argument(problem, which):
    t, kw = problem
    # float32 input with one float64 argument, and the reverse
    as32 = {k: v.float() for k, v in t.items()}
    with pytest.raises(BAD, match=which):
        _dcn(as32, kw, **{which: t[which]})
    with pytest.raises(BAD, match=which):
        _dcn(t, kw, **{which: t[which].float()})


@SETTINGS
@given(
    dcn_problems(batch=st.integers(1, 2)), st.sampled_from(["input", "offset", "mask", "weight"])
)
def test_dcn_integer_tensors_raise_naming_the_argument(problem, which):
    t, kw = problem
    name = "input" if which == "input" else which
    with pytest.raises(BAD, match=name):
        _dcn(t, kw, **{which: t[which].round().to(torch.int64)})


# ---------------------------------------------------------------------------------------------
# roi_align and modulated_deform_roi_pool


@st.composite
def roi_problems(draw, num_rois=st.integers(0, 6), proper=st.booleans()):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
    r = draw(num_rois)
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    img = max(h, w) / scale
    # corners anywhere from beyond the top-left to beyond the bottom-right: inverted, empty
    # and partly outside boxes included
    xy = torch.rand(r, 4, generator=g, dtype=torch.float64) * (img + 8) - 4
    if draw(proper):  # x1 <= x2, y1 <= y2
        xy = torch.cat(
            [torch.minimum(xy[:, :2], xy[:, 2:]), torch.maximum(xy[:, :2], xy[:, 2:])], 1
        )
    b = torch.randint(0, n, (r, 1), generator=g).double()
    rois = torch.cat([b, xy], 1)
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    args = dict(
        output_size=(ph, pw),
        spatial_scale=scale,
        sampling_ratio=draw(st.integers(0, 3)),
    )
    return x, rois, args


@SETTINGS
@given(roi_problems(proper=st.just(True)), st.booleans())
def test_roi_align_matches_torchvision(problem, aligned):
    # proper boxes only: torchvision's CPU kernel raises std::length_error on an inverted box
    # with adaptive sampling (see test_inverted_box_with_adaptive_sampling_reads_zero)
    x, rois, a = problem
    xs = x.clone().requires_grad_()
    xt = x.clone().requires_grad_()
    ours = roi_align(xs, rois, a["output_size"], a["spatial_scale"], a["sampling_ratio"], aligned)
    ref = torchvision.ops.roi_align(
        xt, rois, a["output_size"], a["spatial_scale"], a["sampling_ratio"], aligned
    )
    assert ours.shape == (len(rois), x.shape[1], *a["output_size"])
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g = torch.ones_like(ours)
    ours.backward(g)
    ref.backward(g)
    torch.testing.assert_close(xs.grad, xt.grad, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(roi_problems())
def test_deform_pool_without_offset_is_aligned_roi_align(problem):
    x, rois, a = problem
    out = modulated_deform_roi_pool(x, rois, None, None, **a)
    ref = roi_align(x, rois, a["output_size"], a["spatial_scale"], a["sampling_ratio"], True)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@SETTINGS
@given(roi_problems(num_rois=st.integers(1, 6)), st.integers(0, 2**31 - 1), st.booleans())
def test_deform_pool_extreme_offsets(nan_safe_library, problem, seed, with_mask):
    x, rois, a = problem
    r, (ph, pw) = len(rois), a["output_size"]
    g = _gen(seed)
    offset = _sprinkle(torch.randn(r, 2, ph, pw, generator=g, dtype=x.dtype), seed)
    mask = torch.rand(r, 1, ph, pw, generator=g, dtype=x.dtype) if with_mask else None
    xg, og = x.clone().requires_grad_(), offset.clone().requires_grad_()
    mg = mask.clone().requires_grad_() if with_mask else None
    out = modulated_deform_roi_pool(xg, rois, og, mg, **a, gamma=0.1)
    assert torch.isfinite(out).all()
    # a bin whose x or y shift is NaN, or +-inf / +-1e30 on a RoI of positive extent along that
    # axis, samples only outside the map: it reads 0
    scale = a["spatial_scale"]
    extent = torch.stack([rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]], 1) * scale  # [R, 2]
    big = offset.abs() >= 1e30  # inf included
    outside = offset.isnan() | (big & (extent[:, :, None, None] > 1e-3))
    dead = outside.any(1)  # [R, ph, pw]
    assert torch.all(out.permute(0, 2, 3, 1)[dead] == 0)
    out.backward(torch.ones_like(out))
    assert torch.isfinite(xg.grad).all()
    if with_mask:
        assert torch.isfinite(mg.grad).all()
    # the offset gradient is finite wherever the offset itself is
    assert torch.isfinite(og.grad[torch.isfinite(offset)]).all()


@SETTINGS
@given(roi_problems(), st.sampled_from(["input", "rois"]), st.sampled_from(["align", "pool"]))
def test_roi_ops_non_contiguous_views_match_contiguous(problem, which, op):
    x, rois, a = problem

    def run(x_, rois_):
        if op == "align":
            return roi_align(x_, rois_, a["output_size"], a["spatial_scale"], a["sampling_ratio"])
        return modulated_deform_roi_pool(x_, rois_, None, None, **a)

    ref = run(x, rois)
    if which == "input":
        views = [
            x.contiguous(memory_format=torch.channels_last),
            x.transpose(2, 3).contiguous().transpose(2, 3),
        ]
        for v in views:
            torch.testing.assert_close(run(v, rois), ref, rtol=0, atol=0)
    else:
        wide = torch.zeros(len(rois), 8, dtype=rois.dtype)
        wide[:, 1:6] = rois
        view = wide[:, 1:6]
        assert view.shape == rois.shape
        torch.testing.assert_close(run(x, view), ref, rtol=0, atol=0)


@SETTINGS
@given(roi_problems(num_rois=st.just(0)))
def test_roi_ops_zero_rois(problem):
    x, rois, a = problem
    xg = x.clone().requires_grad_()
    for out in (
        roi_align(xg, rois, a["output_size"], a["spatial_scale"], a["sampling_ratio"]),
        modulated_deform_roi_pool(xg, rois, None, None, **a),
    ):
        assert out.shape == (0, x.shape[1], *a["output_size"])
        out.sum().backward()
        assert torch.equal(xg.grad, torch.zeros_like(x))


@SETTINGS
@given(roi_problems(num_rois=st.integers(1, 4)))
def test_roi_ops_dtypes(problem):
    x, rois, a = problem
    x32 = x.float()
    ref = roi_align(x32, rois.float(), a["output_size"], a["spatial_scale"], a["sampling_ratio"])
    # RoIs may be float64 with float32 features (autocast keeps coordinates float32/64)
    mixed = roi_align(x32, rois, a["output_size"], a["spatial_scale"], a["sampling_ratio"])
    torch.testing.assert_close(mixed, ref, rtol=0, atol=0)
    r, (ph, pw) = len(rois), a["output_size"]
    off64, mask64 = (
        torch.zeros(r, 2, ph, pw, dtype=torch.float64),
        torch.ones(r, 1, ph, pw, dtype=torch.float64),
    )
    with pytest.raises(BAD, match="offset"):
        modulated_deform_roi_pool(x32, rois, off64, None, **a)
    with pytest.raises(BAD, match="mask"):
        modulated_deform_roi_pool(x32, rois, None, mask64, **a)
    for bad_x in (x.round().to(torch.int64), x.round().to(torch.int32)):
        with pytest.raises(BAD, match="input"):
            roi_align(bad_x, rois, a["output_size"], a["spatial_scale"], a["sampling_ratio"])
        with pytest.raises(BAD, match="input"):
            modulated_deform_roi_pool(bad_x, rois, None, None, **a)
    with pytest.raises(BAD, match="rois"):
        roi_align(x, rois.round().long(), a["output_size"], a["spatial_scale"], a["sampling_ratio"])


@SETTINGS
@given(roi_problems(num_rois=st.integers(1, 4)), st.integers(0, 2**31 - 1))
def test_non_finite_rois_raise_naming_rois(nan_safe_library, problem, seed):
    x, rois, a = problem
    bad = rois.clone()
    bad[:, 1:] = _sprinkle(rois[:, 1:], seed, values=(float("nan"), float("inf"), float("-inf")))
    if torch.isfinite(bad).all():
        bad[0, 1 + seed % 4] = float("nan")
    with pytest.raises(BAD, match="rois must be finite"):
        roi_align(x, bad, a["output_size"], a["spatial_scale"], a["sampling_ratio"])
    with pytest.raises(BAD, match="rois must be finite"):
        modulated_deform_roi_pool(x, bad, None, None, **a)


# ---------------------------------------------------------------------------------------------
# nms and batched_nms


def _greedy_nms(boxes, scores, thr):
    """Reference: float64 greedy NMS, ties in input order (the documented convention)."""
    b = boxes.double()
    order = sorted(range(len(b)), key=lambda i: (-float(scores[i]), i))
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep, dead = [], set()
    for i in order:
        if i in dead:
            continue
        keep.append(i)
        for j in order:
            if j in dead or j == i:
                continue
            w = (torch.minimum(b[i, 2], b[j, 2]) - torch.maximum(b[i, 0], b[j, 0])).clamp(min=0)
            h = (torch.minimum(b[i, 3], b[j, 3]) - torch.maximum(b[i, 1], b[j, 1])).clamp(min=0)
            inter = w * h
            if inter / (area[i] + area[j] - inter) > thr:
                dead.add(j)
    return keep


@st.composite
def nms_problems(draw, count=st.integers(0, 30)):
    k = draw(count)
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * 50
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * 20 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    # a few exact ties in score
    scores = (torch.rand(k, generator=g, dtype=torch.float64) * 8).round() / 8
    thr = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
    return boxes, scores, thr


@SETTINGS
@given(nms_problems())
def test_nms_matches_greedy_reference_and_torchvision(problem):
    boxes, scores, thr = problem
    keep = nms(boxes, scores, thr)
    assert keep.dtype == torch.int64 and keep.dim() == 1
    assert keep.tolist() == _greedy_nms(boxes, scores, thr)
    # torchvision agrees up to the order of tied scores
    ref = torchvision.ops.nms(boxes, scores, thr)
    assert sorted(keep.tolist()) == sorted(ref.tolist())


@SETTINGS
@given(nms_problems(), st.integers(0, 2**31 - 1))
def test_nms_non_finite_boxes_and_scores_do_not_crash(problem, seed):
    boxes, scores, thr = problem
    bad_b = _sprinkle(boxes, seed)
    bad_s = _sprinkle(scores, seed + 1)
    for b, s in ((bad_b, scores), (boxes, bad_s), (bad_b, bad_s)):
        keep = nms(b, s, thr)
        assert keep.dtype == torch.int64
        assert len(set(keep.tolist())) == len(keep)
        assert all(0 <= i < len(boxes) for i in keep.tolist())
        kb = batched_nms(b, s, torch.zeros(len(b), dtype=torch.int64), thr)
        assert all(0 <= i < len(boxes) for i in kb.tolist())


@SETTINGS
@given(nms_problems(), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_batched_nms_is_per_class_nms(problem, num_classes, seed):
    boxes, scores, thr = problem
    idxs = torch.randint(0, num_classes, (len(boxes),), generator=_gen(seed))
    for dtype in (torch.float64, torch.float32):
        keep = batched_nms(boxes.to(dtype), scores.to(dtype), idxs, thr)
        expected = []
        for c in range(num_classes):
            members = torch.nonzero(idxs == c).flatten()
            if len(members):
                expected += members[nms(boxes[members], scores[members], thr)].tolist()
        assert sorted(keep.tolist()) == sorted(expected), dtype
        # kept indices by decreasing score
        s = scores[keep]
        assert torch.all(s[:-1] >= s[1:])


@SETTINGS
@given(nms_problems(count=st.integers(1, 30)))
def test_nms_views_dtypes_and_bad_input(problem):
    boxes, scores, thr = problem
    ref = nms(boxes, scores, thr)
    wide = torch.zeros(len(boxes), 7, dtype=boxes.dtype)
    wide[:, 2:6] = boxes
    assert torch.equal(nms(wide[:, 2:6], scores, thr), ref)  # non-contiguous boxes
    assert torch.equal(nms(boxes.t().contiguous().t(), scores, thr), ref)
    sw = torch.zeros(2 * len(scores), dtype=scores.dtype)
    sw[::2] = scores
    assert torch.equal(nms(boxes, sw[::2], thr), ref)  # strided scores
    # float32 boxes with float64 scores: accepted, the scores only order the boxes
    assert torch.equal(nms(boxes.float(), scores, thr), nms(boxes.float(), scores.float(), thr))
    with pytest.raises(BAD, match="dets"):
        nms(boxes.round().long(), scores, thr)
    with pytest.raises(BAD, match="scores"):
        nms(boxes, scores[:-1], thr)
    with pytest.raises(BAD, match="dets"):
        nms(boxes[:, :3], scores, thr)
    with pytest.raises(BAD, match="idxs"):
        batched_nms(boxes, scores, torch.zeros(len(boxes) + 1, dtype=torch.int64), thr)


def test_nms_empty():
    for dtype in (torch.float32, torch.float64):
        empty = torch.zeros(0, 4, dtype=dtype)
        assert nms(empty, torch.zeros(0, dtype=dtype), 0.5).shape == (0,)
        out = batched_nms(
            empty, torch.zeros(0, dtype=dtype), torch.zeros(0, dtype=torch.int64), 0.5
        )
        assert out.shape == (0,) and out.dtype == torch.int64


# ---------------------------------------------------------------------------------------------
# devices


@pytest.mark.cuda
def test_mismatched_devices_raise_naming_the_argument():
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(2, 2, 3, 3)
    off = torch.zeros(1, 18, 4, 4)
    mask = torch.ones(1, 9, 4, 4)
    for name, args in (
        ("offset", (x.cuda(), off, mask.cuda(), w.cuda())),
        ("mask", (x.cuda(), off.cuda(), mask, w.cuda())),
        ("weight", (x.cuda(), off.cuda(), mask.cuda(), w)),
    ):
        with pytest.raises(BAD, match=name):
            modulated_deform_conv2d(*args)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(BAD, match="rois"):
        roi_align(x.cuda(), rois, 2)
    with pytest.raises(BAD, match="offset"):
        modulated_deform_roi_pool(x.cuda(), rois.cuda(), torch.zeros(1, 2, 2, 2), output_size=2)
    with pytest.raises(BAD, match="scores"):
        nms(torch.tensor([[0, 0, 1, 1.0]]).cuda(), torch.tensor([1.0]), 0.5)
