#!/usr/bin/env python
"""The digit-detection ablation table from tools/run_mnist_det_ablation.sh's result files.

    python tools/summarize_mnist_det.py docs/results/mnist_det/*.json [--out TABLE.md]

One row per config (seeds averaged: mean ± sample std, seed list), bbox and segm AP, AP50, APs,
APm, APl (x100), and the wall time per run.
"""

import argparse
import json
import statistics
import sys

KEYS = ("AP", "AP50", "APs", "APm", "APl")


def cell(values) -> str:
    values = [100 * v for v in values]
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("results", nargs="+")
    p.add_argument("--out")
    a = p.parse_args(argv)
    by_cfg: dict[str, list[dict]] = {}
    for path in a.results:
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        by_cfg.setdefault(r["config"], []).append(r)
    head = ["config", "seeds"] + [f"bbox {k}" for k in KEYS] + [f"segm {k}" for k in KEYS]
    lines = ["| " + " | ".join(head + ["wall time"]) + " |", "|" + "---|" * (len(head) + 1)]
    for cfg in sorted(by_cfg):
        runs = by_cfg[cfg]
        row = [cfg, ",".join(str(r["seed"]) for r in runs)]
        for iou in ("bbox", "segm"):
            row += [cell([r["metrics"][iou][k] for r in runs]) for k in KEYS]
        row.append(", ".join(f"{r['wall_time_s'] / 60:.1f} min" for r in runs))
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
