"""One training process of N threads against N processes of one thread (`tools/demo.py --procs N`:
torchrun, gloo, the batch split between the processes), on the 10-minute shapes config by default.

Each round trains every mode from scratch for --iters iterations with `tools/train.py` (the modes
in turn, so that a slow hour hits them alike) and takes the median of the logged per-iteration
times past --skip, and their mean; rank 0 logs them, and its iteration includes the gradient
all-reduce, so it waits for the slower process. Beside each run, the CPU's user, idle and steal
shares from /proc/stat. The figure is the ratio of the medians in the same round. --spin adds one
process whose OpenMP threads spin N rounds at a barrier before they sleep (`GOMP_SPINCOUNT`; the
tools default to `OMP_WAIT_POLICY=PASSIVE`, no spinning); --loaded runs everything beside another
training of the config at one thread. --independent adds N trainings of one thread at once, each
with its share of the batch and its own seed, that never communicate: what the N processes would
take without the gradient all-reduce and the waits for the slower one (the figure is the first
one's).

    python benchmarks/bench_procs.py [--rounds 3] [--iters 120] [--procs 2] [--one-thread]
                                     [--spin 3000,300000] [--independent] [--loaded] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_10min.yaml")
TRAIN = os.path.join(ROOT, "tools", "train.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_threads import omp_env, spin_counts, start_background  # noqa: E402


def cpu_times() -> list[int]:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


def cpu_shares(before: list[int], after: list[int]) -> dict:
    d = [b - a for a, b in zip(before, after)]
    total = max(1, sum(d))
    return {"user": (d[0] + d[1]) / total, "idle": (d[3] + d[4]) / total, "steal": d[7] / total}


def modes(procs: int, one_thread: bool, spins: list[int], independent: bool = False) -> dict:
    """name -> (processes, threads per process, extra environment, independent processes)."""
    out = {
        f"1 process x {procs} threads": (1, procs, {}, False),
        f"{procs} processes x 1 thread": (procs, 1, {}, False),
    }
    for n in spins:
        out[f"1 process x {procs} threads, GOMP_SPINCOUNT={n}"] = (
            1,
            procs,
            {"GOMP_SPINCOUNT": str(n)},
            False,
        )
    if one_thread:
        out["1 process x 1 thread"] = (1, 1, {}, False)
    if independent:
        out[f"{procs} independent processes x 1 thread"] = (procs, 1, {}, True)
    return out


def batch_size(config: str, opts: list[str]) -> int:
    """SOLVER.IMS_PER_BATCH of the config with the overrides."""
    sys.path.insert(0, ROOT)
    from detection.engine.setup import load_config

    return int(load_config(config, list(opts)).SOLVER.IMS_PER_BATCH)


def run_once(
    config: str,
    procs: int,
    threads: int,
    env_extra: dict,
    iters: int,
    skip: int,
    opts: list[str],
    independent: bool = False,
) -> dict:
    """Trains `iters` iterations from scratch; the median logged seconds per iteration past `skip`
    (of the first training when `independent`: `procs` separate trainings at once, each with
    1/procs of the batch)."""
    ws = tempfile.mkdtemp(prefix="bench_procs_")
    try:
        env = omp_env({"OMP_NUM_THREADS": str(threads), **env_extra})
        launch = [sys.executable]
        if procs > 1 and not independent:
            launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]

        def train_cmd(workspace: str, extra: list[str]) -> list[str]:
            return launch + [TRAIN, "--config", config, "--overwrite", "WORKSPACE", workspace,
                             "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", str(iters),
                             "SOLVER.LOG_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", str(10 * iters),
                             *opts, *extra]  # fmt: skip

        cmds = [train_cmd(ws, [])]
        if independent:
            share = ["SOLVER.IMS_PER_BATCH", str(batch_size(config, opts) // procs)]
            cmds = [
                train_cmd(os.path.join(ws, str(k)), share + ["SEED", str(k)]) for k in range(procs)
            ]
        outs = [tempfile.TemporaryFile(mode="w+") for _ in cmds]  # no pipe to fill while waiting
        before = cpu_times()
        runs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                for c, out in zip(cmds, outs)]  # fmt: skip
        codes = [p.wait() for p in runs]
        shares = cpu_shares(before, cpu_times())
        for c, code, out in zip(cmds, codes, outs):
            if code != 0:
                out.seek(0)
                sys.stderr.write(out.read()[-6000:])
                raise SystemExit(f"error: the training failed ({' '.join(c)})")
            out.close()
        log_dir = os.path.join(ws, "0") if independent else ws
        with open(os.path.join(log_dir, "log", "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        train = [r for r in records if r["type"] == "train" and r["iter"] > skip]
        return {
            "s_per_it": statistics.median(r["time"] for r in train),
            "mean_s_per_it": mean_time(records, skip, iters),
            "data_s": statistics.median(r["data"] for r in train),
            **shares,
        }
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def mean_time(records: list[dict], skip: int, iters: int) -> float:
    """The mean seconds per iteration over iterations skip+1 .. iters-1 (the logged medians hide
    an iteration that is slow now and then). Each record's `eta_seconds` is the mean iteration
    time so far times the iterations left, which gives the sum of the iteration times up to
    each record's iteration."""
    by_iter = {r["iter"]: r for r in records if r["type"] == "train"}

    def total(it: int) -> float:
        return by_iter[it]["eta_seconds"] / (iters - it) * it

    return (total(iters - 1) - total(skip)) / (iters - 1 - skip)


def start_load(config: str) -> tuple[subprocess.Popen, str]:
    """Another training of `config` at one thread, killed after the measurements."""
    ws = tempfile.mkdtemp(prefix="bench_procs_load_")
    cmd = [sys.executable, TRAIN, "--config", config, "--overwrite", "WORKSPACE", ws,
           "MODEL.DEVICE", "cpu", "SOLVER.CHECKPOINT_PERIOD", "1000000"]  # fmt: skip
    return start_background(cmd, 30), ws


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=120, help="iterations per training")
    parser.add_argument("--skip", type=int, default=10, help="first iterations left out")
    parser.add_argument("--procs", type=int, default=2, help="processes (and threads of the one)")
    parser.add_argument("--one-thread", action="store_true", help="also one process of 1 thread")
    parser.add_argument(
        "--spin",
        default="",
        help="comma-separated GOMP_SPINCOUNT values: also one process of N threads that spins "
        "that many rounds at a barrier before it sleeps (the tools' default is PASSIVE: 0)",
    )
    parser.add_argument(
        "--independent",
        action="store_true",
        help="also N trainings of one thread at once that never communicate (1/N of the batch each)",
    )
    parser.add_argument(
        "--loaded", action="store_true", help="beside another training of the config at 1 thread"
    )
    parser.add_argument("opts", nargs="*", help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.iters <= args.skip:
        parser.error(f"--iters ({args.iters}) must exceed --skip ({args.skip})")
    table = modes(args.procs, args.one_thread, spin_counts(args.spin), args.independent)
    base_name = next(iter(table))
    print(
        "| round | mode | s / iteration | vs one process | mean s / iteration | loader s | user "
        "| idle | steal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    load = start_load(args.config) if args.loaded else None
    try:
        ratios = measure(args, table)
    finally:
        if load is not None:
            load[0].kill()
            load[0].wait()
            shutil.rmtree(load[1], ignore_errors=True)
    for name in table:
        if name != base_name:
            rs = ratios[name]
            print(f"{name} / {base_name}: median {statistics.median(rs):.2f} "
                  f"(range {min(rs):.2f}-{max(rs):.2f}, {len(rs)} rounds)")  # fmt: skip
    return 0


def measure(args, table: dict) -> dict[str, list[float]]:
    """Prints a table row per run, the modes in turn; returns each mode's ratios to the first."""
    ratios = {name: [] for name in table}
    for k in range(1, args.rounds + 1):
        base = None
        for name, (procs, threads, env_extra, independent) in table.items():
            r = run_once(
                args.config,
                procs,
                threads,
                env_extra,
                args.iters,
                args.skip,
                args.opts,
                independent,
            )
            base = r["s_per_it"] if base is None else base
            ratios[name].append(r["s_per_it"] / base)
            print(f"| {k} | {name} | {r['s_per_it']:.3f} | {r['s_per_it'] / base:.2f} | "
                  f"{r['mean_s_per_it']:.3f} | {r['data_s']:.3f} | {r['user']:.0%} | "
                  f"{r['idle']:.0%} | {r['steal']:.0%} |", flush=True)  # fmt: skip
    return ratios


if __name__ == "__main__":
    sys.exit(main())
