"""detection/_ext.py: loading the compiled library, and refusing one built from older sources."""

import pytest
import torch

from detection import _ext

pytestmark = pytest.mark.skipif(not _ext.HAS_OPS, reason="compiled ops not built")


def test_the_loaded_library_registers_every_ops_autograd():
    assert _ext._stale_detail("_C.so") == ""
    for op in _ext._AUTOGRAD_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"detection::{op}", "Autograd")


def test_a_library_without_an_autograd_kernel_is_refused_with_a_rebuild_hint(monkeypatch):
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key

    def without_roi_align(name, key):
        return name != "detection::roi_align" and has_kernel(name, key)

    monkeypatch.setattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", without_roi_align)
    detail = _ext._stale_detail("/x/_C.cpython-311-x86_64-linux-gnu.so")
    assert detail == (
        ": _C.cpython-311-x86_64-linux-gnu.so was built from older sources (no autograd kernel "
        "for roi_align); rebuild it"
    )
    message = _ext.BUILD_HINT.format(detail=detail)
    assert "roi_align" in message and "pip install --no-build-isolation -e ." in message


def test_a_tool_reports_a_missing_or_stale_build_as_one_error_line(monkeypatch, capsys):
    from detection.utils.cli import EXIT_USAGE, cli_main

    monkeypatch.setattr(_ext, "HAS_OPS", False)
    monkeypatch.setattr(_ext, "_LOAD_ERROR", ": _C.so was built from older sources (...)")

    @cli_main
    def main(argv=None):
        _ext.require_ops()
        return 0

    assert main([]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: detection's compiled ops (detection._C) are not built or failed")
    assert "_C.so was built from older sources" in err
