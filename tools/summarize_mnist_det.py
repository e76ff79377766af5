#!/usr/bin/env python
"""The digit-detection ablation tables from tools/run_mnist_det_ablation.sh's result files.

    python tools/summarize_mnist_det.py docs/results/mnist_det/*.json [--out TABLE.md]

Two Markdown tables. Per config (seeds averaged: mean ± sample std when there are two or more):
bbox and segm AP, AP50, APs, APm, APl (x100). Per run: bbox and segm AP, the training time per
iteration, the wall time (training + evaluation) and the mean 1-minute load average while it ran
(the machine is shared: the wall times are only comparable at similar loads).
"""

import argparse
import json
import re
import statistics
import sys

KEYS = ("AP", "AP50", "APs", "APm", "APl")


def cell(values) -> str:
    values = [100 * v for v in values]
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def seconds_per_iter(run: dict) -> str:
    """'1.234' from the training log's 'H:MM:SS (1.2340 s / it)', or '?'."""
    m = re.search(r"\(([\d.]+) s / it\)", run.get("training_time") or "")
    return f"{float(m.group(1)):.2f}" if m else "?"


def config_table(by_cfg: dict[str, list[dict]]) -> list[str]:
    head = ["config", "seeds"] + [f"bbox {k}" for k in KEYS] + [f"segm {k}" for k in KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cfg in sorted(by_cfg):
        runs = sorted(by_cfg[cfg], key=lambda r: r["seed"])
        row = [cfg, ",".join(str(r["seed"]) for r in runs)]
        for iou in ("bbox", "segm"):
            row += [cell([r["metrics"][iou][k] for r in runs]) for k in KEYS]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def run_table(runs: list[dict]) -> list[str]:
    head = ["run", "bbox AP", "segm AP", "s / it", "wall (train + eval)", "load (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(runs, key=lambda r: (r["config"], r["seed"])):
        wall = f"{r['wall_time_s'] / 60:.1f} min"
        if "train_wall_s" in r:
            wall += f" ({r['train_wall_s'] / 60:.1f} + {r['eval_wall_s'] / 60:.1f})"
        if r.get("resumed"):
            wall += ", resumed: last part only"
        load = r.get("load_1min_mean")
        row = [
            f"{r['config']} s{r['seed']}",
            f"{100 * r['metrics']['bbox']['AP']:.1f}",
            f"{100 * r['metrics']['segm']['AP']:.1f}",
            seconds_per_iter(r),
            wall,
            "?" if load is None else f"{load:.1f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", nargs="+")
    p.add_argument("--out")
    a = p.parse_args(argv)
    runs = []
    for path in a.results:
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        missing = [k for k in ("config", "seed", "wall_time_s", "metrics") if k not in r]
        if missing:
            print(
                f"error: {path}: not a run_mnist_det_ablation.sh result (no {missing[0]!r})",
                file=sys.stderr,
            )
            return 2
        runs.append(r)
    by_cfg: dict[str, list[dict]] = {}
    for r in runs:
        by_cfg.setdefault(r["config"], []).append(r)
    text = "\n".join(config_table(by_cfg) + [""] + run_table(runs))
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
