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
