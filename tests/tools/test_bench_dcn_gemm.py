"""benchmarks/bench_dcn_gemm.py times each of the CPU deformable conv's GEMMs through BLAS and
through oneDNN: the two variants of each must compute the same product, or the table compares
unlike work."""

import torch

from testutils.tools import load_benchmark


def test_both_libraries_compute_the_same_gemms():
    gemms = load_benchmark("bench_dcn_gemm")._gemms(rows=70, kc=3 * 9, cout=5)
    for direction in ("forward", "grad_columns"):
        blas, onednn = gemms[direction]["blas"](), gemms[direction]["onednn"]()
        if direction == "grad_columns":
            onednn = onednn[0]
        onednn = onednn.permute(0, 2, 3, 1).reshape(blas.shape)  # the 1x1 image back as rows
        torch.testing.assert_close(onednn, blas, rtol=1e-5, atol=1e-5, msg=direction)
    # both add one tile's weight gradient into the same sum
    once = gemms["grad_weight"]["blas"]().clone()
    twice = gemms["grad_weight"]["onednn"]()
    assert once.abs().sum() > 0
    torch.testing.assert_close(twice, 2 * once, rtol=1e-5, atol=1e-5)


def test_rates_are_the_faster_librarys_flops_per_second(monkeypatch):
    bench = load_benchmark("bench_dcn_gemm")
    rows, kc, cout = 64, 2 * 9, 8
    monkeypatch.setattr(bench, "GEMM_SHAPES", (("tiny", rows, kc, cout),))
    for peak in (None, 50.0):
        (row,) = bench.measure(rounds=1, peak_gflops=peak)
        for direction in ("forward", "grad_columns", "grad_weight"):
            best_ms = min(row[f"{direction} BLAS ms"], row[f"{direction} oneDNN ms"])
            rate = 2 * rows * kc * cout / (best_ms / 1e3) / 1e9
            text = row[f"{direction} GFLOP/s"]
            assert text.split()[0] == f"{rate:.0f}"
            assert text == (f"{rate:.0f}" if peak is None else f"{rate:.0f} ({rate / peak:.0%})")
