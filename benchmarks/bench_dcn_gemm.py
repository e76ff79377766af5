"""The CPU deformable conv's GEMMs through BLAS (`at::mm`) against oneDNN (a 1x1 convolution,
as the kernel runs them), at the GEMM shapes of one column tile of the shapes demo's layers and
of ResNet-50's res3-res5: which library the kernel should use on this CPU.

The kernel multiplies a tile of columns [rows, K*C] by the weight [Cout, K*C]. Forward: output =
columns x W^T. Backward: grad_columns = grad_rows x W and grad_weight += grad_rows^T x columns
(summed over the tiles), each either by `at::mm` / `addmm_` or by a `convolution_backward` of the
1x1 convolution (dilation 2, as the kernel calls it), timed apart here. The kernel's pick for the
backward on this CPU (`detection._ext.cpu_backward_gemm()`, static: oneDNN only on AVX-512 CPUs
that are not Intel's, where MKL runs its AVX2 kernels; there a weight gradient over 1 MiB still
goes to BLAS, `detection._ext.cpu_weight_grad_gemm`) is printed with the environment; the table
says whether it is the faster one here, and how close the faster one comes to the CPU's FMA
peak (`fma_peak.c`, one core's times the threads; in parentheses). The forward always runs through oneDNN (BLAS's result
can depend on the thread count there, the op's output must not).

Each shape: the two libraries alternated for `--rounds` rounds, the best of each; the ratio is
BLAS over oneDNN (below 1: BLAS faster). Then the whole training step of the 10-minute shapes
config on `--batches` real batches, each stepped once with each library forced
(`detection._ext.set_cpu_backward_gemm`), in alternating order: the median step time of each and
the median of the per-batch ratios.

    python benchmarks/bench_dcn_gemm.py [--threads 2] [--rounds 15] [--batches 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench_batch_scale import _batches, _setup, _step_ms  # noqa: E402
import bench_ops  # noqa: E402
from bench_optimizer import CONFIG_10MIN  # noqa: E402
import run  # noqa: E402

# (layer, tile rows, K*C, Cout): one tile of the kernel's `tiling` (at most 2048 rows and 16 MB
# of columns, evened out over the batch's positions) for the demo's stage shapes at batch 4
# (`ab_libs.DEMO_DCN_SHAPES`, 256 x 352 pixels) and the ResNet-50 shapes of `bench_ops.SHAPES`.
GEMM_SHAPES = (
    ("demo 16->32 ch, 32x44 out", 1880, 144, 32),
    ("demo 32 ch, 32x44", 1880, 288, 32),
    ("demo 32->64 ch, 16x22 out", 1408, 288, 64),
    ("demo 64 ch, 16x22", 1408, 576, 64),
    ("demo 64->128 ch, 16x22", 1408, 576, 128),
    ("demo 128 ch, 16x22", 1408, 1152, 128),
    ("R-50 res3, 128 ch", 1944, 1152, 128),
    ("R-50 res4, 256 ch", 1700, 2304, 256),
    ("R-50 res5, 512 ch", 850, 4608, 512),
)


def _as_image(rows: torch.Tensor) -> torch.Tensor:
    """rows [n, F] as the channels-last image [1, F, 1, n] (the kernel's zero-copy view)."""
    return rows.view(1, 1, rows.shape[0], rows.shape[1]).permute(0, 3, 1, 2)


def _gemms(rows: int, kc: int, cout: int):
    g = torch.Generator().manual_seed(0)
    cols = torch.randn(rows, kc, generator=g)
    grad = torch.randn(rows, cout, generator=g)
    weight = torch.randn(cout, kc, generator=g)
    w4 = weight.view(cout, kc, 1, 1)
    grad_columns = torch.empty(rows, kc)  # BLAS writes it into the kernel's kept scratch
    grad_weight = torch.zeros(cout, kc)  # the sum over the tiles, in place as in the kernel
    conv = dict(stride=[1, 1], padding=[0, 0], dilation=[2, 2], transposed=False,
                output_padding=[0, 0], groups=1)  # fmt: skip
    aten = torch.ops.aten

    def onednn_backward(mask):
        return aten.convolution_backward(
            _as_image(grad), _as_image(cols), w4, None, *conv.values(), mask
        )

    return {
        "forward": {
            "blas": lambda: torch.mm(cols, weight.t()),
            "onednn": lambda: aten.convolution(_as_image(cols), w4, None, *conv.values()),
        },
        "grad_columns": {
            "blas": lambda: torch.mm(grad, weight, out=grad_columns),
            "onednn": lambda: onednn_backward([True, False, False]),
        },
        "grad_weight": {
            "blas": lambda: grad_weight.addmm_(grad.t(), cols),
            "onednn": lambda: grad_weight.add_(
                onednn_backward([False, True, False])[1].view_as(grad_weight)
            ),
        },
    }


def measure(rounds: int, peak_gflops: float | None = None) -> list[dict]:
    """Per shape and direction: each library's best time, their ratio and the faster one's rate
    in GFLOP/s, with its share of `peak_gflops` (the threads' FMA peak) where given."""
    rows_out = []
    for name, rows, kc, cout in GEMM_SHAPES:
        gflop = 2 * rows * kc * cout / 1e9  # every direction multiplies the same three sizes
        row = {"layer": name, "rows x K*C x Cout": f"{rows} x {kc} x {cout}"}
        for direction, fns in _gemms(rows, kc, cout).items():
            best = {lib: float("inf") for lib in fns}
            for fn in fns.values():  # warm-up (oneDNN builds its primitive on the first call)
                fn()
            for _ in range(rounds):
                for lib, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    best[lib] = min(best[lib], (time.perf_counter() - start) * 1e3)
            row[f"{direction} BLAS ms"] = best["blas"]
            row[f"{direction} oneDNN ms"] = best["onednn"]
            row[f"{direction} BLAS/oneDNN"] = best["blas"] / best["onednn"]
            rate = gflop / (min(best.values()) / 1e3)
            row[f"{direction} GFLOP/s"] = (
                f"{rate:.0f} ({rate / peak_gflops:.0%})" if peak_gflops else f"{rate:.0f}"
            )
        rows_out.append(row)
    return rows_out


def measure_step(batches) -> dict:
    from detection import _ext

    cfg, model, optimizer = _setup(CONFIG_10MIN)
    data = _batches(cfg, batches + 2)
    libs = ("blas", "onednn")
    times = {lib: [] for lib in libs}
    try:
        for i, (images, targets) in enumerate(data):
            for lib in libs if i % 2 == 0 else libs[::-1]:
                _ext.set_cpu_backward_gemm(lib)
                ms = _step_ms(model, optimizer, images, targets)
                if i >= 2:  # the first two batches warm up
                    times[lib].append(ms)
    finally:
        _ext.set_cpu_backward_gemm(None)
    ratios = [b / o for b, o in zip(times["blas"], times["onednn"])]
    return {
        "batches": batches,
        "BLAS step ms (median)": statistics.median(times["blas"]),
        "oneDNN step ms (median)": statistics.median(times["onednn"]),
        "BLAS / oneDNN (median of per-batch ratios)": statistics.median(ratios),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="rounds per GEMM shape")
    parser.add_argument("--batches", type=int, default=12, help="training batches (0: none)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.batches < 0:
        print("error: --threads and --rounds must be >= 1, --batches >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(run.environment())
    print(f"\nthreads {torch.get_num_threads()}\n")
    peak = run.fma_peak_gflops()  # one core's, per vector width
    peak_all = max(peak.values()) * args.threads if peak else None
    if peak_all:
        print(f"FMA peak of {args.threads} core(s): {peak_all:.0f} GFLOP/s (fma_peak.c)\n")
    print(bench_ops._format_table(measure(args.rounds, peak_all), markdown=True), flush=True)
    if args.batches:
        print()
        print(bench_ops._format_table([measure_step(args.batches)], markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
