"""benchmarks/run.py's environment line, printed above every benchmark's table: it names what
moves the timings besides the code (here the memory allocator's settings)."""

from testutils.tools import load_benchmark


def test_environment_names_the_allocator_settings(monkeypatch):
    run = load_benchmark("run")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1073741824")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    lines = [s for s in run.environment().splitlines() if s.startswith("- memory allocator: ")]
    assert len(lines) == 1
    assert "MALLOC_TRIM_THRESHOLD_ 1073741824" in lines[0]
    assert "MALLOC_MMAP_THRESHOLD_ unset" in lines[0]


def test_environment_names_both_gemm_libraries():
    """Where oneDNN multiplies the DCN backward's GEMMs, large weight gradients go to BLAS: the
    line says so; where BLAS takes both, it names BLAS alone."""
    from detection import _ext

    run = load_benchmark("run")
    try:
        for lib, expected in (("onednn", "onednn (weight gradients over 1 MiB: blas)"),
                              ("blas", "blas")):  # fmt: skip
            _ext.set_cpu_backward_gemm(lib)
            line = [s for s in run.environment().splitlines() if "backward GEMMs" in s][0]
            assert line.endswith(f"the DCN backward GEMMs' library: {expected}"), line
    finally:
        _ext.set_cpu_backward_gemm(None)


def test_environment_names_the_forward_path():
    """The line says whether the DCN forward runs fused where a layer qualifies, and follows the
    switch."""
    from detection import _ext

    run = load_benchmark("run")
    fused = _ext.cpu_fused_forward()
    try:
        _ext.set_cpu_fused_forward(False)
        line = [s for s in run.environment().splitlines() if "DCN forward" in s][0]
        assert "the DCN forward: columns;" in line, line
    finally:
        _ext.set_cpu_fused_forward(True)
    line = [s for s in run.environment().splitlines() if "DCN forward" in s][0]
    expected = "fused where a layer qualifies" if fused else "columns"
    assert f"the DCN forward: {expected};" in line, line
