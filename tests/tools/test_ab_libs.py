"""benchmarks/ab_libs.py times one side against the other: a switch or an environment variable
given for one side must reach that side's processes and not the other's; a bad one, a library
without the switch or a failed process stops the run with one error line."""

import glob
import os

import pytest
import torch

from detection import _ext
from testutils.tools import load_benchmark

# a stand-in for the benchmark's worker: prints what its process was given, as its JSON line
_ECHO = """
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "ISA": os.environ.get("ATEN_CPU_CAPABILITY"),
                  "threads": os.environ["OMP_NUM_THREADS"]}))
"""


def test_each_side_gets_its_own_switches_and_environment(tmp_path, monkeypatch):
    ab = load_benchmark("ab_libs")
    script, lib = tmp_path / "echo.py", tmp_path / "lib.so"
    script.write_text(_ECHO)
    lib.write_bytes(b"")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    sides = {"B": (["--switch=fused_forward=off"], {"ATEN_CPU_CAPABILITY": "avx2"})}
    runs = ab.alternate(str(script), str(lib), str(lib), 2, 3, ["--resnet50"], sides)
    assert len(runs["A"]) == len(runs["B"]) == 2
    for a, b in zip(runs["A"], runs["B"]):
        assert a["argv"] == [str(lib), str(lib), "--worker", "--resnet50"]
        assert b["argv"] == a["argv"] + ["--switch=fused_forward=off"]
        assert (a["ISA"], b["ISA"]) == (None, "avx2")
        assert a["threads"] == b["threads"] == "3"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--switch-b", "fused=off"], "no switch 'fused'"),
        (["--switch-a", "fused_forward=no"], "fused_forward takes one of on, off"),
        (["--switch-b", "fused_forward"], "expected NAME=VALUE"),
        (["--env-b", "=avx2"], "expected NAME=VALUE"),
    ],
)
def test_a_bad_switch_is_one_error_line(tmp_path, capsys, argv, message):
    ab = load_benchmark("ab_libs")
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"")
    assert ab.main([str(lib), str(lib), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: --") and message in err


def test_the_switches_name_the_library_setters():
    """Every switch's setter exists in the built library and sets what its getter reports."""
    ab = load_benchmark("ab_libs")
    assert set(ab.SWITCHES) == {"fused_forward", "backward_gemm"}
    ops = torch.ops.detection
    _ext.set_cpu_backward_gemm(None)
    pick = _ext.cpu_backward_gemm()
    try:
        setter, values = ab.SWITCHES["fused_forward"]
        getattr(ops, setter)(values["off"])
        assert not _ext.cpu_fused_forward()
        getattr(ops, setter)(values["on"])
        assert _ext.cpu_fused_forward() == (_ext.cpu_isa() != "default")
        setter, values = ab.SWITCHES["backward_gemm"]
        for name in ("blas", "onednn"):
            getattr(ops, setter)(values[name])
            assert _ext.cpu_backward_gemm() == name
        getattr(ops, setter)(values["auto"])
        assert _ext.cpu_backward_gemm() == pick
    finally:
        _ext.set_cpu_fused_forward(True)
        _ext.set_cpu_backward_gemm(None)


def test_a_library_without_the_switch_is_one_error_line(monkeypatch):
    """A build from before a switch existed: the worker names the library and stops, exit 2."""
    ab = load_benchmark("ab_libs")
    monkeypatch.setitem(ab.SWITCHES, "fused_forward", ("_no_such_setter", {"off": False}))
    # the library this process already loaded (loading it again changes nothing)
    (lib,) = glob.glob(os.path.join(os.path.dirname(_ext.__file__), "_C.*.so"))
    threads = torch.get_num_threads()
    try:  # the worker sets the process's thread count and seed before it reads the switches
        with torch.random.fork_rng(), pytest.raises(ab.SwitchMissing, match="no switch fused"):
            ab._worker(lib, False, {"fused_forward": "off"})
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("code, lines", [(3, 1), (2, 0)])
def test_a_failed_process_stops_the_run(tmp_path, capsys, code, lines):
    """Exit 2 is a worker that printed its own error line; any other failure gets one here."""
    ab = load_benchmark("ab_libs")
    script, lib = tmp_path / "fail.py", tmp_path / "lib.so"
    script.write_text(f"import sys; sys.exit({code})\n")
    lib.write_bytes(b"")
    assert ab.alternate(str(script), str(lib), str(lib), 1, 1) is None
    err = capsys.readouterr().err
    assert err.count("\n") == lines
    assert lines == 0 or err.startswith(f"error: {lib}: the timing process exited with {code}")
