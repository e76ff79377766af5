#!/usr/bin/env python
"""Soak test: train with SIGKILLs at random moments, resume after each, compare with a run that
was never interrupted.

    python tools/soak.py --minutes 30 [--config FILE] [--seed 0] [--iters N] [KEY VALUE ...]
    python tools/soak.py --quick --minutes 4       # the tiny network and data of demo.py --quick

1. A reference run of tools/train.py, uninterrupted (its start-up time and seconds per iteration
   set the kill delays).
2. The soak run: `tools/train.py --resume` started again and again in its own process group and
   SIGKILLed after a random delay -- a quarter of the kills uniform within the start-up time,
   the others at start-up + uniform [0, 4 x CHECKPOINT_PERIOD iterations] -- so kills land
   during start-up, iterations and checkpoint writes, until --minutes have passed; then it runs
   to the end unkilled (so --minutes bounds the killing: size --iters so that training outlasts
   it, else the soak ends early with fewer kills). CHECKPOINT_PERIOD of both runs:
   --checkpoint-period, default MAX_ITER // 40 unless the overrides set it (the demo's 500 would
   give a handful of kills). After every kill: the `last_checkpoint` pointer must name a
   checkpoint that loads, and it must be at most CHECKPOINT_PERIOD iterations behind the last
   logged iteration (the most a SIGKILL may lose). Stray temporary files left by a kill inside a
   checkpoint write are counted (train.py removes them at the next start).
3. Both final models are evaluated with tools/test.py. The runs are deterministic CPU runs
   (DETERMINISTIC True, no loader workers, LOG_PERIOD 1), so the weights must be identical, and so
   the bbox/segm AP; on a run that cannot be bit-exact (a GPU), the APs must agree within
   --ap-tolerance instead.

Everything lands under --workspace (default work_space/soak[_quick]): reference/, soak/,
soak.log (every start and kill), summary.json. Exit status 0 when every check held. The total
time is about --minutes plus two training runs plus two evaluations.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this tree first

from detection.utils import cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes.yaml")
TRAIN = os.path.join(ROOT, "tools", "train.py")
TEST = os.path.join(ROOT, "tools", "test.py")


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to keep killing")
    parser.add_argument(
        "--config", default="", help="YAML config (default: shapes; with --quick its tiny copy)"
    )
    parser.add_argument("--seed", type=int, default=0, help="SEED of both runs and of the kills")
    parser.add_argument("--quick", action="store_true", help="demo.py's tiny --quick scale")
    parser.add_argument("--iters", type=int, default=0, help="SOLVER.MAX_ITER (0 = config's)")
    parser.add_argument("--workspace", default="", help="output folder")
    parser.add_argument(
        "--ap-tolerance", type=float, default=0.02, help="|AP difference| allowed when not exact"
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument(
        "--checkpoint-period",
        type=int,
        default=0,
        help="SOLVER.CHECKPOINT_PERIOD of both runs (0: MAX_ITER // 40 unless overrides set it)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


class SoakLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self.start = time.monotonic()

    def __call__(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.start:8.1f} s] {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return env


def _logged_iters(ws: str) -> list[int]:
    path = os.path.join(ws, "log", "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    iters = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if rec.get("type") == "train":
                iters.append(rec["iter"])
    return iters


def _pointer_iteration(ws: str) -> tuple[int, str | None]:
    """(iteration, path) of the checkpoint `model/last_checkpoint` names; (0, None) without."""
    from detection.engine.checkpointer import Checkpointer

    path = Checkpointer(None, save_dir=os.path.join(ws, "model")).get_checkpoint_file()
    if path is None:
        return 0, None
    return int(re.search(r"model_(\d+)\.pth$", path).group(1)), path


def reference_run(opts: list[str], ws: str, threads: int, log: SoakLog) -> dict[str, float]:
    """Uninterrupted training; returns its start-up time and seconds per iteration."""
    log(f"reference run -> {ws}")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *opts, "WORKSPACE", ws],
        cwd=ROOT,
        env=_env(threads),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = None
    while proc.poll() is None:
        if first is None and _logged_iters(ws):
            first = time.monotonic() - start
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"reference run failed ({proc.returncode}):\n{err[-3000:]}")
    total = time.monotonic() - start
    n = max(_logged_iters(ws))
    first = first if first is not None else total
    per_iter = (total - first) / max(n - 1, 1)
    log(f"reference run: {n} iterations in {total:.1f} s (start-up {first:.1f} s)")
    return {"startup_s": first, "iter_s": per_iter, "total_s": total, "iters": n}


def soak_run(
    opts: list[str], ws: str, minutes: float, period: int, timing: dict, rng, threads: int, log
) -> dict:
    """Start/kill/resume until `minutes` are over, then run to the end. Returns the counts."""
    window = 4 * period * timing["iter_s"]
    startups = [timing["startup_s"]]  # start-up times seen (the machine's load varies)
    deadline = time.monotonic() + 60 * minutes
    stats = {"starts": 0, "kills": 0, "kills_in_checkpoint_write": 0, "max_lost_iters": 0}
    stats["problems"] = []
    while True:
        killing = time.monotonic() < deadline
        delay = None
        startup = max(startups[-5:])
        if killing:
            during_startup = rng.random() < 0.25
            delay = rng.uniform(0, startup) if during_startup else startup + rng.uniform(0, window)
        before, _ = _pointer_iteration(ws)
        proc = subprocess.Popen(
            [sys.executable, TRAIN, "--resume", *opts, "WORKSPACE", ws],
            cwd=ROOT,
            env=_env(threads),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: loader workers die with it
        )
        stats["starts"] += 1
        try:
            first_log = _wait_or_kill(proc, delay, os.path.join(ws, "log", "metrics.jsonl"))
        except BaseException:  # the soak itself interrupted: do not leave the run behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        if first_log is not None:
            startups.append(first_log)
        if proc.returncode == 0:
            log(f"start {stats['starts']}: from iteration {before}, ran to the end")
            return stats
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"soak run exited with {proc.returncode} (not killed)")
        stats["kills"] += 1
        _check_after_kill(ws, period, stats, before, delay, log)


def _wait_or_kill(proc: subprocess.Popen, delay: float | None, log_file: str) -> float | None:
    """Wait for `proc`, SIGKILLing its process group after `delay` seconds (None: no kill).
    Returns how long it took to log its first iteration (None if it did not)."""
    start = time.monotonic()
    size = os.path.getsize(log_file) if os.path.isfile(log_file) else 0
    first_log = None
    while proc.poll() is None:
        now = time.monotonic() - start
        if first_log is None and os.path.isfile(log_file) and os.path.getsize(log_file) > size:
            first_log = now
        if delay is not None and now >= delay:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    return first_log


def _check_after_kill(ws, period, stats, before, delay, log) -> None:
    import torch

    tmp = [p for sub in ("model", "save", "final") for p in glob.glob(f"{ws}/{sub}/.*.tmp")]
    if tmp:
        stats["kills_in_checkpoint_write"] += 1
    it, path = _pointer_iteration(ws)
    logged = _logged_iters(ws)
    last = max(logged) if logged else 0
    lost = last - it
    stats["max_lost_iters"] = max(stats["max_lost_iters"], lost)
    note = ""
    if path is not None:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt["iteration"] != it or not ckpt["model"]:
            stats["problems"].append(f"{path}: iteration {ckpt['iteration']} != {it}")
    if lost > period:
        stats["problems"].append(f"kill {stats['kills']}: lost {lost} > {period} iterations")
    if it < before:
        stats["problems"].append(f"kill {stats['kills']}: checkpoint went back {before} -> {it}")
    if tmp:
        note = f", inside a checkpoint write ({len(tmp)} temp file(s))"
    log(
        f"kill {stats['kills']} after {delay:.1f} s: logged iteration {last}, "
        f"checkpoint {it} (was {before}), {lost} iterations lost{note}"
    )


def evaluate(opts: list[str], ws: str, threads: int) -> dict:
    ckpt = os.path.join(ws, "final", "model_final.pth")
    cmd = [sys.executable, TEST, "--no-progress", "--ckpt", ckpt, *opts, "WORKSPACE", ws]
    subprocess.run(cmd, cwd=ROOT, env=_env(threads), check=True, stdout=subprocess.DEVNULL)
    out = {}
    for path in glob.glob(os.path.join(ws, "inference", "*", "metrics.json")):
        with open(path) as f:
            out[os.path.basename(os.path.dirname(path))] = json.load(f)
    return out


def compare_weights(ws_a: str, ws_b: str) -> tuple[bool, float]:
    """(identical, largest absolute difference) of the two final models."""
    import torch

    a = torch.load(os.path.join(ws_a, "final", "model_final.pth"), weights_only=False)["model"]
    b = torch.load(os.path.join(ws_b, "final", "model_final.pth"), weights_only=False)["model"]
    if a.keys() != b.keys():
        return False, float("inf")
    diff = 0.0
    for k in a:
        if a[k].is_floating_point():
            diff = max(
                diff, (a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0
            )
        elif not torch.equal(a[k], b[k]):
            diff = float("inf")
    return diff == 0.0, diff


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through _wait_or_kill's cleanup


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from detection.engine.setup import load_config

    ws = args.workspace or os.path.join(ROOT, "work_space", "soak_quick" if args.quick else "soak")
    os.makedirs(ws, exist_ok=True)
    log = SoakLog(os.path.join(ws, "soak.log"))
    demo = _demo_module() if args.quick else None
    args.config = args.config or (demo.TINY_CONFIG if args.quick else DEFAULT_CONFIG)
    opts = ["--config", args.config]
    overrides = list(demo.QUICK_OVERRIDES) if args.quick else []
    overrides += ["DATASETS.ROOT", os.path.join(ws, "datasets")] if args.quick else []
    overrides += ["MODEL.DEVICE", "cpu", "DETERMINISTIC", "True", "DATALOADER.NUM_WORKERS", "0"]
    overrides += ["SEED", str(args.seed), "SOLVER.LOG_PERIOD", "1", "SOLVER.TEST_PERIOD", "0"]
    overrides += ["SOLVER.MAX_ITER", str(args.iters)] if args.iters else []
    overrides += list(args.opts)
    cfg = load_config(args.config, overrides, exit_on_error=True)
    # the config's period (2500, or 500 for the demo) would give a handful of kills in 30 min
    period = args.checkpoint_period or max(cfg.SOLVER.MAX_ITER // 40, 1)
    if args.checkpoint_period or "SOLVER.CHECKPOINT_PERIOD" not in args.opts[::2]:
        overrides += ["SOLVER.CHECKPOINT_PERIOD", str(period)]
        cfg = load_config(args.config, overrides, exit_on_error=True)
    opts += overrides
    period = cfg.SOLVER.CHECKPOINT_PERIOD
    log(f"soak: {cfg.SOLVER.MAX_ITER} iterations, CHECKPOINT_PERIOD {period}, {args.minutes} min")

    ref_ws, soak_ws = os.path.join(ws, "reference"), os.path.join(ws, "soak")
    for sub in (ref_ws, soak_ws):
        if os.path.exists(sub):
            raise SystemExit(f"error: {sub} exists; use a fresh --workspace")
    timing = reference_run(opts, ref_ws, args.threads, log)
    rng = random.Random(args.seed)
    stats = soak_run(opts, soak_ws, args.minutes, period, timing, rng, args.threads, log)
    identical, max_diff = compare_weights(ref_ws, soak_ws)
    log(f"final weights identical: {identical} (largest difference {max_diff:.3g})")
    metrics = {"reference": evaluate(opts, ref_ws, args.threads)}
    metrics["soak"] = evaluate(opts, soak_ws, args.threads)
    ap_diff = 0.0
    for dataset, m in metrics["reference"].items():
        for iou_type in m:
            a, b = m[iou_type]["AP"], metrics["soak"][dataset][iou_type]["AP"]
            ap_diff = max(ap_diff, abs(a - b))
            log(f"{dataset} {iou_type} AP: reference {a:.4f}, soak {b:.4f}")
    ok = not stats["problems"] and (identical or ap_diff <= args.ap_tolerance)
    summary = dict(
        ok=ok,
        iterations=cfg.SOLVER.MAX_ITER,
        checkpoint_period=period,
        minutes=args.minutes,
        seed=args.seed,
        timing=timing,
        weights_identical=identical,
        max_weight_diff=max_diff,
        max_ap_diff=ap_diff,
        metrics=metrics,
        **stats,
    )
    with open(os.path.join(ws, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log(
        f"{'PASS' if ok else 'FAIL'}: {stats['kills']} kills ({stats['kills_in_checkpoint_write']} "
        f"inside a checkpoint write), at most {stats['max_lost_iters']} iterations lost per kill, "
        f"weights identical {identical}, largest AP difference {ap_diff:.4f}"
        + "".join(f"\n  problem: {p}" for p in stats["problems"])
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
