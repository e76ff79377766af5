"""Accuracy-vs-test-scale comparison of Scaled-MNIST runs (regular, DCNv1, DCNv2, ...).

    python tools/plot_scaled_mnist.py work_space/scaled_mnist/regular work_space/scaled_mnist/dcnv1 \
        work_space/scaled_mnist/dcnv2 --out docs/images/scaled_mnist_accuracy.png

Each RUN_DIR needs scale_accuracy.csv and args.json (written by tools/train_scaled_mnist.py); the
legend label comes from the run's args. Also prints the table as Markdown.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.experiments.scaled_mnist.models import DEFAULT_MIN_DEFORM_LAYER  # noqa: E402
from detection.experiments.scaled_mnist.train import read_scale_accuracy, run_label  # noqa: E402


def describe(args: dict) -> str:
    label = f"{run_label(args)} ({args['arch']}"
    if args.get("deform"):
        first = args.get("min_deform_layer") or DEFAULT_MIN_DEFORM_LAYER[args["arch"]]
        label += f", deformable from conv{first}"
    return label + ")"


def markdown_table(labels: list[str], scales: list[float], accs: list[list[float]]) -> str:
    lines = ["| scale | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for i, s in enumerate(scales):
        lines.append(f"| {s:.1f} | " + " | ".join(f"{100 * a[i]:.2f}" for a in accs) + " |")
    lines.append("| mean | " + " | ".join(f"{100 * sum(a) / len(a):.2f}" for a in accs) + " |")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--title", default="Scaled-MNIST: test accuracy per scale")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, scales, accs = [], None, []
    for run in a.runs:
        for name in ("scale_accuracy.csv", "args.json"):
            if not os.path.exists(os.path.join(run, name)):
                p.error(f"{run} has no {name}: is it a finished tools/train_scaled_mnist.py run?")
        with open(os.path.join(run, "args.json")) as f:
            labels.append(describe(json.load(f)))
        s, acc = read_scale_accuracy(run)
        if scales is not None and s != scales:
            p.error(f"{run} was evaluated at scales {s}, the first run at {scales}")
        scales = s
        accs.append(acc)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, acc in zip(labels, accs):
        ax.plot(scales, [100 * v for v in acc], "o-", label=label)
    ax.set_xlabel("test scale")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=80)
    plt.close(fig)
    table = markdown_table(labels, scales, accs)
    print(table)
    return table


if __name__ == "__main__":
    main()
