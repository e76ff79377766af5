#!/usr/bin/env python
"""Tables (mean +- std over seeds) from the summary.json files of Scaled-MNIST runs.

    python tools/summarize_scaled_mnist.py docs/results/scaled_mnist/*.json [--out TABLE.md]

Runs are grouped by setting (architecture, regular/DCNv1/DCNv2, offset lr factor, data, training
scales, epochs and sizes); seeds are averaged. Per group: the final epoch's accuracy at each test
scale, its mean over the scales, and the best epoch's mean over the scales (the epoch with the
highest mean), each as mean +- sample std over seeds, with the seed count. Runs not "completed"
are listed apart and left out of the means.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setting(a: dict) -> tuple:
    label = "regular" if not a.get("deform") else ("DCNv2" if a.get("modulation") else "DCNv1")
    olr = a.get("offset_lr_factor") if a.get("deform") else None
    train = f"{a['scale_min']:g}" + (
        "" if a["scale_min"] == a["scale_max"] else f"-{a['scale_max']:g}"
    )
    return (a["arch"], label, olr, a.get("data_used", a.get("data")), train, a["epochs"],
            a["train_size"], a["test_size"])  # fmt: skip


def cell(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("summaries", nargs="+", help="summary.json files (or run folders holding one)")
    p.add_argument("--out", help="also write the Markdown here")
    p.add_argument("--per-epoch", action="store_true", help="also the per-epoch mean accuracy")
    a = p.parse_args(argv)
    groups: dict[tuple, list[dict]] = {}
    incomplete = []
    for path in a.summaries:
        if os.path.isdir(path):
            path = os.path.join(path, "summary.json")
        try:
            with open(path) as f:
                s = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        if s.get("status") != "completed":
            incomplete.append(f"{os.path.basename(path)} ({s.get('status')}, "
                              f"{len(s.get('epochs', []))} epochs)")  # fmt: skip
            continue
        groups.setdefault(setting(s["args"]), []).append(s)
    lines = []
    scales = None
    for key in sorted(groups):
        runs = groups[key]
        scales = scales or list(runs[0]["final"]["scale_accuracy"])
    head = ["arch", "net", "offset lr", "data", "train scale", "epochs", "train/test", "seeds",
            "best-epoch mean", "final mean"] + scales  # fmt: skip
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key in sorted(groups):
        runs = groups[key]
        arch, label, olr, data, train, epochs, ntrain, ntest = key
        row = [arch, label, "" if olr is None else f"{olr:g}", data, train, str(epochs),
               f"{ntrain}/{ntest}", ",".join(str(r["args"]["seed"]) for r in runs),
               cell([r["best"]["mean_scale_accuracy"] for r in runs]),
               cell([r["final"]["mean_scale_accuracy"] for r in runs])]  # fmt: skip
        row += [cell([r["final"]["scale_accuracy"][s] for r in runs]) for s in scales]
        lines.append("| " + " | ".join(row) + " |")
    if a.per_epoch:
        lines += [
            "",
            "Mean accuracy over the 11 test scales after each epoch (mean ± std over seeds):",
            "",
        ]
        n = max(len(r["epochs"]) for runs in groups.values() for r in runs)
        lines.append(
            "| net | offset lr | " + " | ".join(f"epoch {e}" for e in range(1, n + 1)) + " |"
        )
        lines.append("|" + "---|" * (n + 2))
        for key in sorted(groups):
            runs = groups[key]
            cells = []
            for e in range(n):
                vals = [r["epochs"][e]["mean_scale_accuracy"] for r in runs if len(r["epochs"]) > e]
                cells.append(cell(vals) if vals else "")
            olr = "" if key[2] is None else f"{key[2]:g}"
            lines.append(f"| {key[0]} {key[1]} | {olr} | " + " | ".join(cells) + " |")
    if incomplete:
        lines.append("")
        lines.append("Not completed (left out): " + "; ".join(incomplete))
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
