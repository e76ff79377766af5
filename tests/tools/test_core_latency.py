"""benchmarks/core_latency.c and run.py's line on it: a round trip in ns between two CPUs, one
error line and exit 1 (never a hang) for one CPU twice or a CPU the process cannot run on."""

import os
import shutil
import subprocess

import pytest

from testutils.tools import load_benchmark

CC = shutil.which("cc") or shutil.which("gcc")
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

pytestmark = [
    pytest.mark.skipif(CC is None, reason="needs a C compiler"),
    pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs the process may run on"),
]


def _bench_run():
    return load_benchmark("run")


@pytest.fixture(scope="module")
def exe():
    path = _bench_run().core_latency_exe()
    assert path is not None, "core_latency.c did not compile"
    return path


def _run(exe, *cpus):
    return subprocess.run([exe, *map(str, cpus)], capture_output=True, text=True, timeout=60)


def test_round_trip_between_two_cpus(exe):
    out = _run(exe, CPUS[0], CPUS[1])
    assert out.returncode == 0, out.stderr
    assert 0 < float(out.stdout) < 1e6  # ns: tens to hundreds on real machines


@pytest.mark.parametrize("case", ["same", "absent", "usage"])
def test_bad_cpus_give_one_error_line(exe, case):
    args = {"same": (CPUS[0], CPUS[0]), "absent": (CPUS[0], 4096), "usage": (CPUS[0],)}[case]
    out = _run(exe, *args)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


def test_environment_line():
    run = _bench_run()
    trip = run.core_round_trip_ns()
    assert trip is not None and trip[:2] == (CPUS[0], CPUS[1]) and trip[2] > 0
    assert f"core-to-core round trip, CPUs {CPUS[0]} and {CPUS[1]}: " in run.environment()
