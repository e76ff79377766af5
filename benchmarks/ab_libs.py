"""A/B of two builds of the op library on the CPU: the same op calls timed with library A and
library B alternately, each run in a fresh process (both register `torch.ops.detection`, so they
cannot share one), N rounds; prints the best and the median time per op and B/A. For a code
change that must not slow the CPU kernels: A = the build before it, B = the build after it,
measured in the same run on the same (loaded) machine.

    cp detection/_C*.so /tmp/before.so   # before the change; then rebuild
    python benchmarks/ab_libs.py /tmp/before.so detection/_C.cpython-311-x86_64-linux-gnu.so

One thread (OMP_NUM_THREADS=1; --threads to change), small shapes so that every op is timed
several times per round, plus the shapes demo's: the deformable conv at its stage shapes (batch
4, 16-128 channels, `DEMO_DCN_SHAPES`) with `F.conv2d` forward plus backward on each (the same
code in A and B: its B/A shows the run's noise) and its deformable RoI pooling (64 channels on
16x22, 256 RoIs, 7x7 and 14x14).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# The shapes demo's stage shapes (channels, height, width; batch 4): res2 (not deformable in the
# demo, the narrowest case), res3 and res4 at 256 x 352 pixels, res5 (dilated).
DEMO_DCN_SHAPES = ((16, 64, 88), (32, 32, 44), (64, 16, 22), (128, 16, 22))


def _worker(lib: str) -> dict:
    import torch

    torch.ops.load_library(lib)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    ops = torch.ops.detection

    def best(fn, n=5):
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1e3

    out = {}
    x = torch.randn(1, 128, 40, 48)
    a = (x, torch.randn(1, 18, 40, 48) * 2, torch.rand(1, 9, 40, 48), torch.randn(128, 128, 3, 3),
         torch.randn(128), 1, 1, 1, 1, 1, 1, 1, 1, 64)  # fmt: skip
    go = torch.randn(1, 128, 40, 48)
    out["dcn fwd"] = best(lambda: ops.modulated_deform_conv2d(*a))
    out["dcn bwd"] = best(lambda: ops._modulated_deform_conv2d_backward(go, *a))
    xr = torch.randn(2, 64, 50, 68)
    xy = torch.rand(256, 2) * torch.tensor([60.0, 45.0])
    rois = torch.cat(
        [torch.randint(0, 2, (256, 1)).float(), xy, xy + torch.rand(256, 2) * 30 + 2], 1
    )
    g = torch.randn(256, 64, 7, 7)
    out["roi_align fwd"] = best(lambda: ops.roi_align(xr, rois, 1.0, 7, 7, 2, True))
    out["roi_align bwd"] = best(
        lambda: ops._roi_align_backward(g, rois, 1.0, 7, 7, 2, 64, 50, 68, 2, True)
    )
    o, m = torch.randn(256, 2, 7, 7) * 0.1, torch.rand(256, 1, 7, 7)
    out["deform_roi_pool fwd"] = best(
        lambda: ops.modulated_deform_roi_pool(xr, rois, o, m, 7, 7, 1.0, 2, 0.1)
    )
    out["deform_roi_pool bwd"] = best(
        lambda: ops._modulated_deform_roi_pool_backward(g, xr, rois, o, m, 7, 7, 1.0, 2, 0.1)
    )
    bx = torch.rand(4000, 2) * 500
    boxes = torch.cat([bx, bx + torch.rand(4000, 2) * 80 + 1], 1)
    scores = torch.rand(4000)
    out["nms"] = best(lambda: ops.nms(boxes, scores, 0.7))
    for c, h, w in DEMO_DCN_SHAPES:
        a = (torch.randn(4, c, h, w), torch.randn(4, 18, h, w) * 2, torch.rand(4, 9, h, w),
             torch.randn(c, c, 3, 3), torch.randn(c), 1, 1, 1, 1, 1, 1, 1, 1, 64)  # fmt: skip
        go = torch.randn(4, c, h, w)
        out[f"demo dcn {c}ch fwd"] = best(lambda: ops.modulated_deform_conv2d(*a))
        out[f"demo dcn {c}ch bwd"] = best(lambda: ops._modulated_deform_conv2d_backward(go, *a))
        xc, wc = a[0].clone().requires_grad_(), a[3].clone().requires_grad_()
        # the dense conv of the same shape: the same code in A and B, so its B/A is the noise
        out[f"demo conv {c}ch fwd+bwd"] = best(
            lambda: torch.nn.functional.conv2d(xc, wc, None, 1, 1).backward(go)
        )
    xd = torch.randn(4, 64, 16, 22)
    xy = torch.rand(256, 2) * torch.tensor([300.0, 200.0])
    rd = torch.cat([torch.randint(0, 4, (256, 1)).float(), xy, xy + torch.rand(256, 2) * 50 + 8], 1)
    for size in (7, 14):
        o, m = torch.randn(256, 2, size, size) * 0.1, torch.rand(256, 1, size, size)
        g = torch.randn(256, 64, size, size)
        p = (size, size, 1.0 / 16, 2, 0.1)
        out[f"demo deform_roi_pool {size} fwd"] = best(
            lambda: ops.modulated_deform_roi_pool(xd, rd, o, m, *p)
        )
        out[f"demo deform_roi_pool {size} bwd"] = best(
            lambda: ops._modulated_deform_roi_pool_backward(g, xd, rd, o, m, *p)
        )
    return out


def alternate(script, lib_a, lib_b, rounds, threads, extra=()) -> dict[str, list[dict]] | None:
    """`script LIB LIB --worker *extra` in fresh processes at `threads` threads, A then B, `rounds`
    times; the JSON object each prints last, by "A" / "B". None (after one error line) when a
    library file is missing."""
    for lib in (lib_a, lib_b):
        if not os.path.isfile(lib):
            print(f"error: {lib}: no such library file", file=sys.stderr)
            return None
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for _ in range(rounds):
        for key, lib in (("A", lib_a), ("B", lib_b)):
            cmd = [sys.executable, os.path.abspath(script), lib, lib, "--worker", *extra]
            out = subprocess.check_output(cmd, env=env)
            runs[key].append(json.loads(out.decode().strip().splitlines()[-1]))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lib_a")
    parser.add_argument("lib_b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.lib_a)))
        return 0
    runs = alternate(__file__, args.lib_a, args.lib_b, args.rounds, args.threads)
    if runs is None:
        return 2
    print("| op | A best ms | B best ms | B/A best | A median ms | B median ms | B/A median |")
    print("|---|---|---|---|---|---|---|")
    for op in runs["A"][0]:
        a = [r[op] for r in runs["A"]]
        b = [r[op] for r in runs["B"]]
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {op} | {min(a):.1f} | {min(b):.1f} | {min(b) / min(a):.2f} | {ma:.1f} | "
              f"{mb:.1f} | {mb / ma:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
