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
16x22, 256 RoIs, 7x7 and 14x14). `--resnet50` adds the ResNet-50 shapes: the deformable conv at
res3-res5 (`bench_ops.SHAPES`, `F.conv2d` beside it as the noise row; at res3 also with a
channels-last input and output gradient) and the RoI ops on the
paper config's res4 features (2 images, 1024 channels, 50x68, 512 RoIs, 14x14 bins).

A and B may also be one library run two ways: `--switch-b fused_forward=off` (or
`backward_gemm=blas|onednn|auto`) sets one of the library's run-time switches in B's processes,
`--env-b ATEN_CPU_CAPABILITY=avx2` an environment variable (`--switch-a`, `--env-a` for A):

    python benchmarks/ab_libs.py LIB LIB --switch-b fused_forward=off
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


class SwitchMissing(Exception):
    """The library a worker loaded lacks the setter of a switch it was given."""


# The library's run-time switches a side may set: NAME -> (its setter op, VALUE -> argument).
SWITCHES = {
    "fused_forward": ("_cpu_set_fused_forward", {"on": True, "off": False}),
    "backward_gemm": ("_cpu_set_backward_gemm", {v: v for v in ("auto", "blas", "onednn")}),
}


def parse_assignments(flag: str, items, allowed: dict | None = None) -> dict[str, str]:
    """NAME=VALUE items of `flag` as a dict; with `allowed` (SWITCHES) the names and values are
    checked. Raises ValueError with the message for the error line."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE")
        if allowed is not None:
            if name not in allowed:
                raise ValueError(
                    f"{flag} {item!r}: no switch {name!r} (one of {', '.join(allowed)})"
                )
            if value not in allowed[name][1]:
                values = ", ".join(allowed[name][1])
                raise ValueError(f"{flag} {item!r}: {name} takes one of {values}")
        out[name] = value
    return out


def _worker(lib: str, resnet50: bool = False, switches: dict[str, str] | None = None) -> dict:
    import torch

    torch.ops.load_library(lib)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    ops = torch.ops.detection
    for name, value in (switches or {}).items():
        setter, values = SWITCHES[name]
        try:
            set_switch = getattr(ops, setter)
        except (AttributeError, RuntimeError):
            raise SwitchMissing(f"{lib}: has no switch {name} (a build from before it)") from None
        set_switch(values[value])

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
    if resnet50:
        out.update(_resnet50(ops, best))
    return out


# bench_ops.SHAPES, the ResNet-50 shapes (N, C_in, C_out, H, W, kernel, stride, padding,
# dilation); not imported from there: bench_ops loads the tree's own library, not A or B.
RESNET50_SHAPES = {
    "res3": (2, 128, 128, 100, 136, 3, 1, 1, 1),
    "res4": (2, 256, 256, 50, 68, 3, 1, 1, 1),
    "res5": (2, 512, 512, 50, 68, 3, 1, 2, 2),
}


def _resnet50(ops, best) -> dict:
    import torch

    out = {}
    for name, (n, cin, cout, h, w, k, s, p, d) in RESNET50_SHAPES.items():
        ho, wo = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
        a = (torch.randn(n, cin, h, w), torch.randn(n, 2 * k * k, ho, wo) * 2,
             torch.rand(n, k * k, ho, wo), torch.randn(cout, cin, k, k) * 0.05, None,
             s, s, p, p, d, d, 1, 1, 64)  # fmt: skip
        go = torch.randn(n, cout, ho, wo)
        out[f"{name} dcn fwd"] = best(lambda: ops.modulated_deform_conv2d(*a), 3)
        out[f"{name} dcn bwd"] = best(lambda: ops._modulated_deform_conv2d_backward(go, *a), 3)
        xc, wc = a[0].clone().requires_grad_(), a[3].clone().requires_grad_()
        out[f"{name} conv fwd+bwd"] = best(  # the same code in A and B: the noise
            lambda: torch.nn.functional.conv2d(xc, wc, None, s, p, d).backward(go), 3
        )
        if name == "res3":  # a channels-last model's activations and gradients
            cl = torch.channels_last
            a_cl, go_cl = (a[0].to(memory_format=cl),) + a[1:], go.to(memory_format=cl)
            out["res3 dcn fwd, channels-last"] = best(lambda: ops.modulated_deform_conv2d(*a_cl), 3)
            out["res3 dcn bwd, channels-last"] = best(
                lambda: ops._modulated_deform_conv2d_backward(go_cl, *a_cl), 3
            )
    x = torch.randn(2, 1024, 50, 68)
    xy = torch.rand(512, 2) * torch.tensor([1000.0, 700.0])
    rois = torch.cat(
        [torch.randint(0, 2, (512, 1)).float(), xy, xy + torch.rand(512, 2) * 300 + 16], 1
    )
    o, m = torch.randn(512, 2, 14, 14) * 0.1, torch.rand(512, 1, 14, 14)
    g = torch.randn(512, 1024, 14, 14)
    p = (14, 14, 1.0 / 16, 2, 0.1)
    out["paper roi_align fwd"] = best(lambda: ops.roi_align(x, rois, 1.0 / 16, 14, 14, 2, True), 3)
    out["paper roi_align bwd"] = best(
        lambda: ops._roi_align_backward(g, rois, 1.0 / 16, 14, 14, 2, 1024, 50, 68, 2, True), 3
    )
    out["paper deform_roi_pool fwd"] = best(
        lambda: ops.modulated_deform_roi_pool(x, rois, o, m, *p), 3
    )
    out["paper deform_roi_pool bwd"] = best(
        lambda: ops._modulated_deform_roi_pool_backward(g, x, rois, o, m, *p), 3
    )
    return out


def alternate(
    script, lib_a, lib_b, rounds, threads, extra=(), sides=None
) -> dict[str, list[dict]] | None:
    """`script LIB LIB --worker *extra` in fresh processes at `threads` threads, A then B, `rounds`
    times; the JSON object each prints last, by "A" / "B". `sides` may give "A" and "B" each
    (arguments added to its command line, environment variables added to its processes'). None
    (after one error line) when a library file is missing or a process fails."""
    for lib in (lib_a, lib_b):
        if not os.path.isfile(lib):
            print(f"error: {lib}: no such library file", file=sys.stderr)
            return None
    sides = sides or {}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for _ in range(rounds):
        for key, lib in (("A", lib_a), ("B", lib_b)):
            args, env_vars = sides.get(key, ((), {}))
            env = dict(os.environ, **env_vars, OMP_NUM_THREADS=str(threads))
            cmd = [sys.executable, os.path.abspath(script), lib, lib, "--worker", *extra, *args]
            try:
                out = subprocess.check_output(cmd, env=env)
            except subprocess.CalledProcessError as e:
                if e.returncode != 2:  # 2: the worker printed its own error line
                    print(f"error: {lib}: the timing process exited with {e.returncode}",
                          file=sys.stderr)  # fmt: skip
                return None
            runs[key].append(json.loads(out.decode().strip().splitlines()[-1]))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lib_a")
    parser.add_argument("lib_b")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resnet50", action="store_true", help="add the ResNet-50 shapes")
    for side in "ab":
        parser.add_argument(
            f"--switch-{side}", action="append", default=[], metavar="NAME=VALUE",
            help=f"a run-time switch of the library in {side.upper()}'s processes: "
            "fused_forward=on|off, backward_gemm=auto|blas|onednn",
        )  # fmt: skip
        parser.add_argument(
            f"--env-{side}", action="append", default=[], metavar="KEY=VALUE",
            help=f"an environment variable of {side.upper()}'s processes",
        )  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--switch", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        switches = parse_assignments("--switch", args.switch, SWITCHES)
        try:
            print(json.dumps(_worker(args.lib_a, args.resnet50, switches)))
        except SwitchMissing as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    sides = {}
    try:
        for side in "ab":
            flag = f"--switch-{side}"
            switches = parse_assignments(flag, getattr(args, f"switch_{side}"), SWITCHES)
            env_vars = parse_assignments(f"--env-{side}", getattr(args, f"env_{side}"))
            sides[side.upper()] = ([f"--switch={n}={v}" for n, v in switches.items()], env_vars)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = ["--resnet50"] if args.resnet50 else []
    runs = alternate(__file__, args.lib_a, args.lib_b, args.rounds, args.threads, extra, sides)
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
