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
