"""benchmarks/bench_placement.py: each step labelled by the round trips before and after it, the
medians and ratios per placement, a tiny config's run, and one error line for bad arguments."""

import os
import shutil

import pytest

from testutils.tools import CONFIG, OPS_READY, load_benchmark

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _bench():
    return load_benchmark("bench_placement")


@pytest.mark.parametrize(
    "before,after,expected",
    [(60, 70, "close"), (330, 360, "far"), (60, 330, None), (330, 60, None), (200, 200, None),
     (150, 60, None), (250, 330, None), (float("nan"), 60, None), (330, float("nan"), None)],
)  # fmt: skip
def test_label(before, after, expected):
    assert _bench().label(before, after, close_ns=150, far_ns=250) == expected


def test_summary_and_report():
    bp = _bench()
    steps = [("deformable", "close", ms) for ms in (200.0, 210.0, 220.0)]
    steps += [("dense", "close", ms) for ms in (100.0, 120.0)]
    steps += [("deformable", "far", 240.0), ("dense", "far", 110.0), ("dense", None, 999.0)]
    summary = bp.summarize(steps)
    assert summary == {
        "close": {"deformable": (3, 210.0), "dense": (2, 110.0)},
        "far": {"deformable": (1, 240.0), "dense": (1, 110.0)},
    }
    text = bp.report(summary, dropped=1)
    assert "| close | 3, 2 | 210.0 | 110.0 | 1.91 |" in text
    assert "| far | 1, 1 | 240.0 | 110.0 | 2.18 |" in text
    assert "far / close: deformable 1.14, dense 1.00" in text
    assert text.endswith("steps dropped (placement changed during the step): 1")


def test_report_with_one_placement():
    bp = _bench()
    text = bp.report(bp.summarize([("deformable", "close", 2.0), ("dense", "close", 1.0)]), 0)
    assert "| close | 1, 1 | 2.0 | 1.0 | 2.00 |" in text and "| far |" not in text
    assert "only these placements were seen: close" in text


@pytest.mark.slow
@pytest.mark.skipif(not OPS_READY, reason="needs the compiled detection ops")
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs cc")
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs the process may run on")
def test_tiny_run(capsys):
    args = ["--seconds", "1", "--config", CONFIG, "--images", "1"]
    assert _bench().main(args) == 0
    out = capsys.readouterr().out
    assert "core-to-core round trip" in out and "OpenMP's waiting threads: OMP_WAIT_POLICY" in out
    n = int(out.split("\n\n")[1].split()[0])  # "<n> steps, threads ..."
    assert n >= 2 and "| placement | steps (deformable, dense) |" in out
    assert "steps dropped (placement changed during the step): " in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seconds", "0"], "error: --seconds must be positive, got 0"),
        (["--images", "0"], "error: --images must be at least 1"),
        (["--close-ns", "300", "--far-ns", "200"], "error: --close-ns 300 must not exceed --far-ns 200"),
        (["--config", "/nonexistent.yaml"], "error: --config /nonexistent.yaml: no such file"),
    ],
)  # fmt: skip
def test_bad_arguments(args, message, capsys):
    assert _bench().main(args) == 2
    assert capsys.readouterr().err.strip() == message
