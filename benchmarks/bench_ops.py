"""Op benchmarks: our ops against baselines measured in the same run.

Modulated deformable convolution on the ResNet-50 C3-C5 shapes of a DCNv2 Mask R-CNN (3x3,
stride 1, mask given, N=2): forward and forward+backward times of
``detection.layers.modulated_deform_conv2d``, of ``torch.nn.functional.conv2d`` on the same shape
(the dense lower bound) and of ``torchvision.ops.deform_conv2d``, with ratios. CPU always, CUDA
when available. Other op benchmarks plug in as modules exposing ``run(device, repeat) ->
list[dict]`` (``bench_roi_ops`` is picked up when present); rows of the same ``op`` form one table.

    python benchmarks/bench_ops.py [--repeat 2] [--shapes res3,res4,res5] [--devices cpu,cuda]
                                   [--csv PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from detection.layers import modulated_deform_conv2d  # noqa: E402

# name -> (N, C_in, C_out, H, W, kernel, stride, padding, dilation)
SHAPES = {
    "res3": (2, 128, 128, 100, 136, 3, 1, 1, 1),
    "res4": (2, 256, 256, 50, 68, 3, 1, 1, 1),
    "res5": (2, 512, 512, 50, 68, 3, 1, 2, 2),
}
PLUGINS = ["bench_roi_ops"]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, repeat: int, warmup: int = 1) -> float:
    """Best wall time of `fn` in milliseconds over `repeat` runs after `warmup` runs (the minimum
    is the estimate least disturbed by other processes sharing the machine)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def _dcn_inputs(shape, device, dtype=torch.float32, seed=0):
    n, cin, cout, h, w, k, s, p, d = shape
    gen = torch.Generator().manual_seed(seed)
    ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
    wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1
    x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype)
    offset = torch.randn(n, 2 * k * k, ho, wo, generator=gen, dtype=dtype) * 2
    mask = torch.rand(n, k * k, ho, wo, generator=gen, dtype=dtype)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=dtype) / (cin * k * k) ** 0.5
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    return [t.to(device) for t in (x, offset, mask, weight, bias)], dict(
        stride=s, padding=p, dilation=d
    )


def _fwd_bwd(fn: Callable[..., torch.Tensor], tensors, kw) -> Callable[[], None]:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]

    def run():
        out = fn(*leaves, **kw)
        out.backward(torch.ones_like(out))
        for t in leaves:
            t.grad = None

    return run


def bench_deform_conv(device: str, repeat: int, shapes: list[str]) -> list[dict]:
    try:
        import torchvision
    except ImportError:  # pragma: no cover
        torchvision = None
    rows = []
    for name in shapes:
        tensors, kw = _dcn_inputs(SHAPES[name], device)
        x, offset, mask, weight, bias = tensors

        def ours(x, offset, mask, weight, bias, **kw):
            return modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)

        def dense(x, offset, mask, weight, bias, **kw):
            return F.conv2d(x, weight, bias, **kw)

        impls = {"ours": ours, "conv2d": dense}
        if torchvision is not None:

            def tv(x, offset, mask, weight, bias, **kw):
                return torchvision.ops.deform_conv2d(x, offset, weight, bias, mask=mask, **kw)

            impls["torchvision"] = tv
        row = {"op": "modulated_deform_conv2d", "shape": name, "device": device,
               "N,C,H,W": "{},{},{},{}".format(*SHAPES[name][0:2], *SHAPES[name][3:5])}  # fmt: skip
        for label, fn in impls.items():
            with torch.no_grad():
                row[f"{label}_fwd_ms"] = time_ms(lambda: fn(*tensors, **kw), device, repeat)
            row[f"{label}_fwdbwd_ms"] = time_ms(_fwd_bwd(fn, tensors, kw), device, repeat)
        for phase in ("fwd", "fwdbwd"):
            for base in ("conv2d", "torchvision"):
                if f"{base}_{phase}_ms" in row:
                    row[f"{phase}_ours/{base}"] = (
                        row[f"ours_{phase}_ms"] / row[f"{base}_{phase}_ms"]
                    )
        rows.append(row)
        print(_format_table([row], markdown=False), flush=True)
    return rows


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _format_table(rows: list[dict], markdown: bool) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [keys] + [[_fmt(r.get(k, "")) for k in keys] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "---|" * len(keys))
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c[i].rjust(widths[i]) for i in range(len(keys))) for c in cells)


def _tables(rows: list[dict], markdown: bool) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("op", "?"), r.get("device", "?")), []).append(r)
    out = []
    for (op, device), group in groups.items():
        out.append(f"### {op} ({device})" if markdown else f"== {op} ({device}) ==")
        out.append(_format_table(group, markdown))
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per measurement (best)")
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help="comma list of " + ",".join(SHAPES)
    )
    parser.add_argument("--devices", default=None, help="cpu and/or cuda (default: all available)")
    parser.add_argument("--csv", default=None, help="write all rows as CSV here")
    parser.add_argument("--markdown", default=None, help="write the tables as Markdown here")
    parser.add_argument("--no-plugins", action="store_true", help="only the deformable conv")
    args = parser.parse_args(argv)

    devices = (
        args.devices.split(",")
        if args.devices
        else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            parser.error(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices {devices}")
    rows: list[dict] = []
    for device in devices:
        rows += bench_deform_conv(device, args.repeat, shapes)
        if args.no_plugins:
            continue
        for plugin in PLUGINS:
            try:
                module = importlib.import_module(plugin)
            except ImportError:
                continue
            rows += module.run(device, args.repeat)

    print()
    print(_tables(rows, markdown=False))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_tables(rows, markdown=True))
    if args.csv:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
