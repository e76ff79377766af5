"""The deformable model's and its dense twin's training step at two threads, by where the host
has put the two CPUs: on cores that share a cache ("close") or on cores that do not ("far":
another CCD of an EPYC, another socket). A VM's host moves its vCPUs between the two within
seconds (benchmarks/RESULTS.md, nineteenth and twentieth rounds), so a whole run's time mixes
them; here every step is labelled.

One process builds both models of `run.py --sections model` (the config's input size,
`--images` synthetic images, SGD) and runs their training steps in turn for `--seconds`; between
every two steps it measures the round trip of one cache line between the first two CPUs it may
run on (`core_latency.c`). A step whose round trips before and after are both under
`--close-ns` counts as close, both over `--far-ns` as far; a step with one of each is dropped.
Per placement: the steps counted, the median step of each model and their ratio; then each
model's far / close ratio.

    OMP_NUM_THREADS=2 python benchmarks/bench_placement.py [--seconds 300] [--config CONFIG]
        [--images 4] [--close-ns 150] [--far-ns 250]

The process imports `detection` before torch, as the tools do, so OpenMP's threads sleep at
their barriers (`OMP_WAIT_POLICY=PASSIVE`) as in training.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# first: sets OMP_WAIT_POLICY before torch loads libgomp
import detection  # noqa: E402

# isort: split
from bench_batch_scale import _step_ms  # noqa: E402
import run  # noqa: E402
import torch  # noqa: E402

MODELS = ("deformable", "dense")


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _stepper(config: str, dense: bool, n_img: int):
    """A function running one training step of the config's model (dense: the dense twin) and
    returning its time in ms."""
    cfg = run._model_cfg(config, dense, "cpu", None)
    return functools.partial(_step_ms, *run._model_setup(cfg, "cpu", n_img))


def _round_trip() -> float:
    """The round trip in ns between the first two CPUs; NaN where it failed (the step is then
    dropped: NaN is neither close nor far)."""
    trip = run.core_round_trip_ns()
    return float("nan") if trip is None else trip[2]


def label(before: float, after: float, close_ns: float, far_ns: float) -> str | None:
    """'close', 'far', or None (the placement changed, or a round trip between the bounds)."""
    if before < close_ns and after < close_ns:
        return "close"
    if before > far_ns and after > far_ns:
        return "far"
    return None


def summarize(steps: list[tuple[str, str | None, float]]) -> dict:
    """{placement: {model: (steps, median ms)}} from (model, placement, ms) triples."""
    out: dict = {}
    for place in ("close", "far"):
        for name in MODELS:
            times = [ms for m, p, ms in steps if m == name and p == place]
            if times:
                out.setdefault(place, {})[name] = (len(times), statistics.median(times))
    return out


def report(summary: dict, dropped: int) -> str:
    lines = [
        "| placement | steps (deformable, dense) | deformable ms | dense ms | deformable / dense |",
        "|---|---|---|---|---|",
    ]
    for place, rows in summary.items():
        if len(rows) < len(MODELS):
            continue
        (n_d, dcn), (n_s, dense) = rows["deformable"], rows["dense"]
        lines.append(f"| {place} | {n_d}, {n_s} | {dcn:.1f} | {dense:.1f} | {dcn / dense:.2f} |")
    if all(len(summary.get(p, {})) == len(MODELS) for p in ("close", "far")):
        ratios = ", ".join(
            f"{name} {summary['far'][name][1] / summary['close'][name][1]:.2f}" for name in MODELS
        )
        lines.append(f"\nfar / close: {ratios}")
    else:
        seen = ", ".join(summary) or "none"
        lines.append(f"\nonly these placements were seen: {seen}")
    lines.append(f"steps dropped (placement changed during the step): {dropped}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--config", default=run.SHAPES_CONFIG, help="a model config (YAML)")
    parser.add_argument("--images", type=int, default=4, help="images per step")
    parser.add_argument("--close-ns", type=float, default=150.0)
    parser.add_argument("--far-ns", type=float, default=250.0)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        return _error(f"--seconds must be positive, got {args.seconds:g}")
    if args.images < 1:
        return _error("--images must be at least 1")
    if not args.close_ns <= args.far_ns:
        return _error(f"--close-ns {args.close_ns:g} must not exceed --far-ns {args.far_ns:g}")
    if not os.path.isfile(args.config):
        return _error(f"--config {args.config}: no such file")
    if run.core_round_trip_ns() is None:
        return _error(
            "cannot measure the round trip between two CPUs (needs two CPUs this process may "
            "run on, a C compiler and Linux)"
        )
    if not detection._ext.HAS_OPS:
        return _error("the compiled ops are missing: `make build` first (README, Building)")

    print(run.environment())
    steppers = {name: _stepper(args.config, name == "dense", args.images) for name in MODELS}
    for step in steppers.values():  # warm-up: the scratch, oneDNN's primitives, the allocator
        step()
        step()
    steps = []
    before = _round_trip()
    end = time.time() + args.seconds
    while time.time() < end:
        for name, step in steppers.items():
            ms = step()
            after = _round_trip()
            steps.append((name, label(before, after, args.close_ns, args.far_ns), ms))
            before = after
    dropped = sum(p is None for _, p, _ in steps)
    print(f"\n{len(steps)} steps, threads {torch.get_num_threads()}, {args.images} images each\n")
    print(report(summarize(steps), dropped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
