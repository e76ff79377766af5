"""Threads under contention: seconds per training iteration of the tiny shapes config
(`configs/shapes/e2e_deformconv_mask_rcnn_shapes_tiny.yaml`, tools/train.py) at 1 and 2 OpenMP
threads, with libgomp's default wait policy (spin 300000 rounds at each barrier, then sleep) and
with OMP_WAIT_POLICY=PASSIVE (sleep at once), on the machine as it is ("idle") and loaded by a
second training of the same config at one thread (the spinning variant runs 6 iterations, the
others --iters; the figure is the median over the run's iterations). Every figure is a ratio to the 1-thread run
under the same load in the same run; the load average is recorded with each row.

    python benchmarks/bench_threads.py [--iters 30] [--loads idle,loaded] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_tiny.yaml")
TRAIN = os.path.join(ROOT, "tools", "train.py")

# name -> environment. "spin" pins libgomp's default spin count explicitly, so that the row keeps
# the old behaviour whatever default `detection` now sets.
VARIANTS = {
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "2 threads, spin (libgomp default)": {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "300000"},
    "2 threads, PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}
# The spinning variant can be 50x slower on a shared machine: fewer iterations keep it bearable.
SPIN_ITERS = 6


def _opts(ws: str, data: str, iters: int) -> list[str]:
    return [
        "MODEL.DEVICE", "cpu", "WORKSPACE", ws, "DATASETS.ROOT", data,
        "DATASETS.SHAPES.NUM_TRAIN", "32", "DATASETS.SHAPES.NUM_VAL", "4",
        "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({iters},)", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", str(10 * iters), "SOLVER.LOG_PERIOD", str(iters),
        "SOLVER.TEST_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
    ]  # fmt: skip


def omp_env(extra: dict) -> dict:
    """This process's environment without OMP_* / GOMP_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(extra)
    return env


def spin_counts(text: str) -> list[int]:
    """The --spin option's comma-separated GOMP_SPINCOUNT values ("" = none)."""
    return [int(v) for v in text.split(",") if v]


def start_background(cmd: list[str], settle_s: float) -> subprocess.Popen:
    """`cmd` at one OpenMP thread, output discarded; returns after `settle_s` seconds (past its
    start-up). The caller kills it."""
    env = omp_env({"OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(settle_s)
    return proc


def seconds_per_iteration(env_extra: dict, iters: int, data: str) -> float:
    """Median seconds per iteration (tools/train.py's window median) of one fresh run."""
    ws = tempfile.mkdtemp(prefix="bench_threads_")
    try:
        cmd = [sys.executable, TRAIN, "--config", CONFIG, *_opts(ws, data, iters)]
        subprocess.run(
            cmd, cwd=ROOT, env=omp_env(env_extra), check=True, capture_output=True, text=True
        )
        with open(os.path.join(ws, "log", "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        return float([r for r in records if r["type"] == "train"][-1]["time"])
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def start_load(data: str) -> subprocess.Popen:
    """A second training at one thread, long enough to outlast the measurements (killed after)."""
    ws = tempfile.mkdtemp(prefix="bench_threads_load_")
    proc = start_background(
        [sys.executable, TRAIN, "--config", CONFIG, *_opts(ws, data, 100000)], 20
    )
    proc.workspace = ws
    return proc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=30, help="iterations per measurement")
    parser.add_argument("--loads", default="idle,loaded", help="idle, loaded or both")
    parser.add_argument(
        "--spin",
        default="",
        help="comma-separated GOMP_SPINCOUNT values: also 2 threads that spin that many rounds "
        "at a barrier before they sleep",
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out"))
    args = parser.parse_args(argv)
    variants = dict(VARIANTS)
    for n in spin_counts(args.spin):
        variants[f"2 threads, GOMP_SPINCOUNT={n}"] = {
            "OMP_NUM_THREADS": "2",
            "GOMP_SPINCOUNT": str(n),
        }
    data = tempfile.mkdtemp(prefix="bench_threads_data_")
    rows = []
    try:
        seconds_per_iteration(VARIANTS["1 thread"], 2, data)  # generate the data set once
        for load in args.loads.split(","):
            loader = start_load(data) if load == "loaded" else None
            try:
                base = None
                for name, env in variants.items():
                    load_avg = os.getloadavg()[0]
                    spin = int(env.get("GOMP_SPINCOUNT", 0))
                    iters = min(args.iters, SPIN_ITERS) if spin >= 300000 else args.iters
                    s = seconds_per_iteration(env, iters, data)
                    base = s if base is None else base
                    rows.append((load, name, s, s / base, load_avg))
                    print(f"{load:7s} {name:36s} {s:.3f} s/it  x{s / base:.2f}  (load {load_avg:.1f})",
                          flush=True)  # fmt: skip
            finally:
                if loader is not None:
                    loader.kill()
                    loader.wait()
                    shutil.rmtree(loader.workspace, ignore_errors=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    table = ["| machine | threads | s / iteration | vs 1 thread | 1-min load average |",
             "|---|---|---|---|---|"]  # fmt: skip
    table += [
        f"| {load} | {name} | {s:.3f} | {r:.2f}x | {la:.1f} |" for load, name, s, r, la in rows
    ]
    text = "\n".join(table)
    with open(os.path.join(args.out, "threads.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
