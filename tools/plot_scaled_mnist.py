"""Accuracy-vs-test-scale comparison of Scaled-MNIST runs (regular, DCNv1, DCNv2, ...).

    python tools/plot_scaled_mnist.py work_space/scaled_mnist/regular work_space/scaled_mnist/dcnv1 \
        work_space/scaled_mnist/dcnv2 --out docs/images/scaled_mnist_accuracy.png

Each RUN_DIR needs scale_accuracy.csv and args.json (written by tools/train_scaled_mnist.py), or
is a run's summary.json (the final epoch is plotted; runs not completed are skipped); the legend
label comes from the run's args. Runs whose labels agree (e.g. the same setting with
different --seed) are averaged: the curve is the mean, the bar spans min to max, and the Markdown
table printed at the end shows "mean (min-max)".
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.experiments.scaled_mnist.models import DEFAULT_MIN_DEFORM_LAYER  # noqa: E402
from detection.experiments.scaled_mnist.train import read_scale_accuracy, run_label  # noqa: E402
from detection.utils import cli  # noqa: E402


def describe(args: dict) -> str:
    label = f"{run_label(args)} ({args['arch']}"
    if args.get("deform"):
        first = args.get("min_deform_layer") or DEFAULT_MIN_DEFORM_LAYER[args["arch"]]
        label += f", deformable from conv{first}"
    if args.get("deform") and args.get("offset_lr_factor") is not None:
        label += f", offset lr x{args['offset_lr_factor']:g}"
    if args.get("data_used"):
        label += f", {args['data_used']}"
    if (args.get("scale_min"), args.get("scale_max")) != (0.5, 1.5):
        lo, hi = args["scale_min"], args["scale_max"]
        label += f", train scale {lo:g}" + (f"-{hi:g}" if hi != lo else " only")
    return label + ")"


def _cell(values: list[float]) -> str:
    mean = 100 * sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ({100 * min(values):.2f}-{100 * max(values):.2f})"


def markdown_table(labels: list[str], scales: list[float], accs: list[list[list[float]]]) -> str:
    """accs[model][run][scale] -> a Markdown table, one row per scale plus the mean over scales."""
    head = [f"{label} (n={len(a)})" if len(a) > 1 else label for label, a in zip(labels, accs)]
    lines = ["| scale | " + " | ".join(head) + " |", "|---" * (len(labels) + 1) + "|"]
    for i, s in enumerate(scales):
        lines.append(f"| {s:.1f} | " + " | ".join(_cell([r[i] for r in a]) for a in accs) + " |")
    means = [_cell([sum(r) / len(r) for r in a]) for a in accs]
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--title", default="Scaled-MNIST: test accuracy per scale")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[list[float]]] = {}
    scales = None
    for run in a.runs:
        if run.endswith(".json"):  # a summary.json (e.g. docs/results/scaled_mnist/*.json)
            with open(run) as f:
                summary = json.load(f)
            if summary.get("status") != "completed":
                print(f"skipped {run}: status {summary.get('status')}", file=sys.stderr)
                continue
            label = describe(summary["args"])
            final = summary["final"]["scale_accuracy"]
            s, acc = [float(k) for k in final], list(final.values())
        else:
            for name in ("scale_accuracy.csv", "args.json"):
                if not os.path.exists(os.path.join(run, name)):
                    p.error(f"{run} has no {name}: is it a finished train_scaled_mnist.py run?")
            with open(os.path.join(run, "args.json")) as f:
                label = describe(json.load(f))
            s, acc = read_scale_accuracy(run)
        if scales is not None and s != scales:
            p.error(f"{run} was evaluated at scales {s}, the first run at {scales}")
        scales = s
        groups.setdefault(label, []).append(acc)
    labels, accs = list(groups), list(groups.values())
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, runs in zip(labels, accs):
        mean = [100 * sum(r[i] for r in runs) / len(runs) for i in range(len(scales))]
        lo = [m - 100 * min(r[i] for r in runs) for i, m in enumerate(mean)]
        hi = [100 * max(r[i] for r in runs) - m for i, m in enumerate(mean)]
        name = label + (f", {len(runs)} seeds" if len(runs) > 1 else "")
        ax.errorbar(scales, mean, yerr=[lo, hi], fmt="o-", capsize=3, label=name)
    ax.set_xlabel("test scale")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=80)
    plt.close(fig)
    table = markdown_table(labels, scales, accs)
    print(table)
    return table


if __name__ == "__main__":
    status = cli.run_tool(main)
    if status:  # run as a script or through runpy, success returns normally
        sys.exit(status)
