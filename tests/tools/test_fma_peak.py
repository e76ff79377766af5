"""benchmarks/fma_peak.c and run.py's line on it: one core's float32 FMA throughput for each
vector width the CPU has, in GFLOP/s."""

import platform
import shutil
import subprocess

import pytest

from testutils.tools import load_benchmark

CC = shutil.which("cc") or shutil.which("gcc")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()

pytestmark = [
    pytest.mark.skipif(CC is None, reason="needs a C compiler"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="fma_peak.c is x86-64 only"),
    pytest.mark.skipif(not {"avx2", "fma"} <= FLAGS, reason="needs a CPU with AVX2 and FMA"),
]


def _bench_run():
    return load_benchmark("run")


def test_one_line_per_width_the_cpu_has():
    exe = _bench_run().c_tool_exe("fma_peak.c")
    assert exe is not None, "fma_peak.c did not compile"
    out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    widths = [line.split()[0] for line in out.stdout.splitlines()]
    assert widths == (["avx512"] if "avx512f" in FLAGS else []) + ["avx2"]


def test_environment_line():
    run = _bench_run()
    peak = run.fma_peak_gflops()
    assert peak is not None and set(peak) >= {"avx2"}
    # GFLOP/s of one core: a few to a few hundred on any x86-64 CPU with FMA
    assert all(1 < g < 1e4 for g in peak.values()), peak
    assert "- one core's float32 FMA peak, GFLOP/s: " in run.environment()
