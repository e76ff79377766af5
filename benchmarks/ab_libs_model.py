"""A/B of two builds of the op library inside the model: the 10-minute shapes config's training
step and inference, with library A and library B alternately, each run in a fresh process (the
two cannot share one: both register `torch.ops.detection`). For an op change whose share of the
step is too small for whole-step times to show through the machine's drift between processes.

Per process, after two warm-up steps: the median step and inference time over `--batches`
real batches of the config's loader, and, from `torch.profiler` over the same batches, the
CPU time per batch of each op family of ours (forward and backward: `detection::*`, and until
2026-12-06 the Python autograd nodes `GeneratedBackwardFor_detection_*`), counted at its outermost
calls with what they call (the GEMMs and copies an op launches are its work: the fused forward
of 2026-12-05 moved its GEMM from a oneDNN call into our own kernel, which self time alone
counted as our op's growth), and the self time of all ops. The op families' times are what the
change acts on; the totals show the drift.

    cp detection/_C*.so /tmp/before.so   # before the change; then rebuild
    python benchmarks/ab_libs_model.py /tmp/before.so detection/_C.cpython-311-x86_64-linux-gnu.so \
        [--rounds 2] [--threads 1] [--batches 8]

Each process imports a copy of the `detection` package made of links to this checkout's files,
with its `_C` library linked to A or B. A library built before the ops' autograd moved into it
(C++, 2026-12-06) cannot be one of them: `detection` refuses to load it, since its ops would
train without gradients under today's Python (`ab_libs.py`, which calls the ops directly, still
compares it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:  # benchmarks/ only: the worker imports `detection` from its own copy
    sys.path.insert(0, HERE)

from ab_libs import alternate  # noqa: E402

# op families: the substring of the profiler's event name that puts an event in the family
FAMILIES = {"deform_conv": "deform_conv2d", "roi_pool": "roi_pool", "roi_align": "roi_align"}


def _package_with(lib: str, into: str) -> str:
    """`into`/detection: links to every entry of this checkout's package, its `_C` library
    replaced by a link to `lib`; returns `into` (for sys.path)."""
    src = os.path.join(ROOT, "detection")
    dst = os.path.join(into, "detection")
    os.makedirs(dst)
    ours = {os.path.basename(p) for p in glob.glob(os.path.join(src, "_C.*so"))}
    for name in os.listdir(src):
        if name not in ours and not name.startswith("_C_cuda_emu"):
            os.symlink(os.path.join(src, name), os.path.join(dst, name))
    tag = sorted(ours)[0] if ours else "_C.so"
    os.symlink(os.path.abspath(lib), os.path.join(dst, tag))
    return into


def family_times(events) -> dict[str, float]:
    """Microseconds of the profiler's `events` (torch.autograd.profiler's FunctionEvent: name,
    cpu_time_total, self_cpu_time_total, cpu_parent): "all ops", the sum of every event's self
    time; and per FAMILIES entry, the inclusive time of the family's outermost events, those
    with no event of any family above them (an autograd node and the backward op it calls count
    once, with the GEMMs under them)."""

    def ours(name: str) -> bool:
        return any(key in name for key in FAMILIES.values())

    def outermost(e) -> bool:
        p = e.cpu_parent
        while p is not None:
            if ours(p.name):
                return False
            p = p.cpu_parent
        return True

    out = {"all ops": sum(e.self_cpu_time_total for e in events)}
    for fam, key in FAMILIES.items():
        out[fam] = sum(e.cpu_time_total for e in events if key in e.name and outermost(e))
    return out


def _worker(lib: str, batches: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sys.path[:0] = [_package_with(lib, tmp), HERE]
        # imported first: the bench modules below put this checkout on sys.path
        import detection

        if not detection.__file__.startswith(tmp):
            raise RuntimeError(f"imported {detection.__file__}, not the copy in {tmp}")
        from bench_batch_scale import _setup, _step_ms, _warm_batches
        from bench_optimizer import CONFIG_10MIN
        import torch
        from torch.profiler import ProfilerActivity, profile

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        cfg, model, optimizer = _setup(CONFIG_10MIN)
        data = _warm_batches(cfg, model, optimizer, batches + 2, 2)

        def families(prof) -> dict:
            return {k: v / 1e3 / len(data) for k, v in family_times(prof.events()).items()}

        res = {"train step": statistics.median(_step_ms(model, optimizer, *b) for b in data)}
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in data:
                _step_ms(model, optimizer, *b)
        res.update({f"train: {k}": v for k, v in families(prof).items()})
        model.eval()
        with torch.no_grad():
            model(data[0][0])
            times = []
            for images, _ in data:
                t0 = time.perf_counter()
                model(images)
                times.append((time.perf_counter() - t0) * 1e3)
            res["inference"] = statistics.median(times)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for images, _ in data:
                    model(images)
        res.update({f"inference: {k}": v for k, v in families(prof).items()})
        return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lib_a")
    parser.add_argument("lib_b")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.lib_a, args.batches)))
        return 0
    runs = alternate(__file__, args.lib_a, args.lib_b, args.rounds, args.threads,
                     ("--batches", str(args.batches)))  # fmt: skip
    if runs is None:
        return 2
    print(
        f"{args.threads} thread(s), {args.rounds} rounds of A then B, {args.batches} batches each;"
    )
    print(
        "ms per batch (steps and inference: medians; op families: profiler CPU time of their "
        "outermost calls, with what they call; all ops: the sum of self times)\n"
    )
    print("| | A | B | B/A |")
    print("|---|---|---|---|")
    for key in runs["A"][0]:
        a = statistics.median(r[key] for r in runs["A"])
        b = statistics.median(r[key] for r in runs["B"])
        ratio = f"{b / a:.2f}" if a > 0 else "-"
        print(f"| {key} | {', '.join(f'{r[key]:.1f}' for r in runs['A'])} | "
              f"{', '.join(f'{r[key]:.1f}' for r in runs['B'])} | {ratio} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
