"""benchmarks/ab_libs_model.py's op families: the time of our ops with the GEMMs and copies they
launch, each call counted once, so that moving a GEMM from a oneDNN call into our own kernel
(the fused forward) does not read as our op getting slower."""

from types import SimpleNamespace

import torch
from torch.profiler import ProfilerActivity, profile

from detection.layers.deform_conv import modulated_deform_conv2d
from testutils.tools import load_benchmark


def _event(name, total, self_time, parent=None):
    return SimpleNamespace(
        name=name, cpu_time_total=total, self_cpu_time_total=self_time, cpu_parent=parent
    )


def test_a_family_counts_its_outermost_calls_with_their_children():
    ab = load_benchmark("ab_libs_model")
    node = _event("GeneratedBackwardFor_detection_modulated_deform_conv2d", 100, 5)
    op = _event("detection::_modulated_deform_conv2d_backward", 90, 40, node)
    gemm = _event("aten::mm", 50, 50, op)
    fwd = _event("detection::modulated_deform_conv2d", 30, 30)
    pool = _event("detection::modulated_deform_roi_pool", 20, 12)
    copy = _event("aten::copy_", 8, 8, pool)
    other = _event("aten::convolution", 70, 70)
    times = ab.family_times([node, op, gemm, fwd, pool, copy, other])
    assert times["all ops"] == 5 + 40 + 50 + 30 + 12 + 8 + 70
    assert times["deform_conv"] == 100 + 30  # the node with the op and the GEMM under it, once
    assert times["roi_pool"] == 20  # its copy included
    assert times["roi_align"] == 0


def test_the_profiler_events_have_what_family_times_reads():
    ab = load_benchmark("ab_libs_model")
    x = torch.randn(1, 16, 12, 12, requires_grad=True)
    offset = torch.randn(1, 18, 12, 12)
    mask = torch.rand(1, 9, 12, 12)
    weight = torch.randn(16, 16, 3, 3, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        modulated_deform_conv2d(x, offset, mask, weight, padding=1).sum().backward()
    events = prof.events()
    times = ab.family_times(events)
    ours = [e for e in events if "deform_conv2d" in e.name]
    assert ours, [e.name for e in events]
    # at least every family event's own time, at most everything the profile saw
    assert times["deform_conv"] >= sum(e.self_cpu_time_total for e in ours) > 0
    assert times["deform_conv"] <= sum(e.cpu_time_total for e in events if e.cpu_parent is None)
