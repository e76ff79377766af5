#!/usr/bin/env python
"""Plot training curves from WORKSPACE/log/metrics.jsonl into a PNG.

    python tools/plot_curves.py --metrics work_space/log/metrics.jsonl --output curves.png

Top: the total loss and each loss term (windowed median at each logged iteration). Bottom: the
learning rate, and evaluation AP when periodic evaluation ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

from detection.utils import cli  # noqa: E402


def read_metrics(path: str) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) from a metrics.jsonl; a later record for the same
    iteration (e.g. after a resume) replaces an earlier one."""
    if not os.path.isfile(path):
        raise cli.MissingInputError(
            f"--metrics: no such file {path}: give WORKSPACE/log/metrics.jsonl of a training run"
        )
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                int(rec["iter"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise cli.UsageError(
                    f"--metrics: {path}:{line_no} is not a metrics record ({exc!r}): give a "
                    "metrics.jsonl written by tools/train.py"
                ) from None
            (evals if rec.get("type") == "eval" else train)[int(rec["iter"])] = rec
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_curves(metrics_path: str, output: str) -> str:
    """Write the PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = read_metrics(metrics_path)
    if not train:
        raise cli.UsageError(f"--metrics: {metrics_path} has no training records")
    its = [r["iter"] for r in train]
    loss_keys = sorted(
        {k for r in train for k in r if k.startswith("loss_") and not k.endswith("_avg")}
    )
    fig, (ax_loss, ax_lr) = plt.subplots(
        2, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax_loss.plot(its, [r["loss"] for r in train], color="black", linewidth=2, label="loss (total)")
    for key in loss_keys:
        ax_loss.plot(its, [r.get(key, float("nan")) for r in train], label=key)
    ax_loss.set_ylabel("loss (median over the log window)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_lr.plot(its, [r["lr"] for r in train], color="tab:blue")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("iteration")
    ax_lr.grid(True, alpha=0.3)
    ap_keys = sorted({k for r in evals for k in r if k.endswith("/AP")})
    if ap_keys:
        ax_ap = ax_lr.twinx()
        for key in ap_keys:
            ax_ap.plot(
                [r["iter"] for r in evals],
                [r.get(key, float("nan")) for r in evals],
                "o-",
                label=key,
            )
        ax_ap.set_ylabel("AP")
        ax_ap.legend(fontsize=8, loc="lower right")
    fig.suptitle(os.path.abspath(metrics_path), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


@cli.cli_main
def main(argv=None) -> int:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--metrics",
        default="work_space/log/metrics.jsonl",
        help="metrics.jsonl written by train.py",
    )
    parser.add_argument(
        "--output", default="", help="PNG path (default: loss_curves.png next to the metrics)"
    )
    args = parser.parse_args(argv)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.metrics)), "loss_curves.png"
    )
    print(plot_curves(args.metrics, output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
