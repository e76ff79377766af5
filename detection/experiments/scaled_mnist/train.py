"""Train and evaluate a Scaled-MNIST classifier (regular, DCNv1 or DCNv2); CLI in
`tools/train_scaled_mnist.py`.

Protocol: every training image is scaled by a fresh random factor in [scale_min, scale_max] and
padded/cropped back to 28x28; after each epoch the test set is evaluated at one fixed random scale
per image (the "validation" columns); after training it is evaluated separately at each scale of
`TEST_SCALES` (0.5, 0.6, ..., 1.5).

Outputs under `--out`: `log.csv` (epoch, main/loss, validation/main/loss, main/accuracy,
validation/main/accuracy, elapsed_time), `scale_accuracy.csv` (scale, accuracy, loss),
`learning_curves.png`, `args.json` and `model.pt` (a dict with "model", "args", "epoch").
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from detection.experiments.scaled_mnist import data as D
from detection.experiments.scaled_mnist.models import ARCHS, build_model, parameter_groups

LOG_COLUMNS = (
    "epoch",
    "main/loss",
    "validation/main/loss",
    "main/accuracy",
    "validation/main/accuracy",
    "elapsed_time",
)


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Scaled-MNIST with and without deformable convs.")
    p.add_argument("--arch", choices=ARCHS, default="ScaledMNISTNet")
    p.add_argument("--deform", type=str2bool, default=False, help="deformable convs (True/False)")
    p.add_argument(
        "--modulation",
        type=str2bool,
        default=True,
        help="DCNv2 modulation masks (True) or DCNv1 (False); only with --deform True",
    )
    p.add_argument(
        "--min-deform-layer",
        type=int,
        default=None,
        help="convs numbered >= N are deformable (default: 3 ScaledMNISTNet, 4 MNISTClassifier)",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--gamma", type=float, default=0.7, help="StepLR factor per epoch")
    p.add_argument(
        "--offset-lr-factor",
        type=float,
        default=0.1,
        help="lr factor of parameters whose name contains conv_offset",
    )
    p.add_argument("--train-size", type=int, default=60000)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--data", choices=("synthetic", "mnist"), default="synthetic")
    p.add_argument(
        "--data-root",
        default="datasets",
        help="holds mnist/ (real MNIST idx files) and synthetic_digits/ (the cache)",
    )
    p.add_argument("--scale-min", type=float, default=0.5)
    p.add_argument("--scale-max", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="work_space/scaled_mnist/run")
    p.add_argument("--quiet", action="store_true", help="do not print the per-epoch table")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Errors naming the offending argument."""
    for name in ("epochs", "batch_size", "train_size", "test_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.scale_min <= args.scale_max:
        raise ValueError(
            f"need 0 < --scale-min <= --scale-max, got {args.scale_min}, {args.scale_max}"
        )
    if args.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.min_deform_layer is not None and args.min_deform_layer < 1:
        raise ValueError(f"--min-deform-layer must be >= 1, got {args.min_deform_layer}")


def run_label(args: dict) -> str:
    """ "regular", "DCNv1" or "DCNv2" (from a run's args)."""
    if not args.get("deform"):
        return "regular"
    return "DCNv2" if args.get("modulation", True) else "DCNv1"


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on `x` `[N, 1, 28, 28]`, labels `y` `[N]`."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch])
        loss += F.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(x), correct / len(x)


def train_epoch(model, loader, optimizer, device) -> tuple[float, float]:
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return loss_sum / n, correct / n


def _write_csv(path: str, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _print_row(row: dict, header: bool) -> None:
    widths = [max(len(c), 10) for c in LOG_COLUMNS]
    if header:
        print("  ".join(c.ljust(w) for c, w in zip(LOG_COLUMNS, widths)), flush=True)
    cells = [str(row["epoch"])] + [f"{row[c]:.6g}" for c in LOG_COLUMNS[1:]]
    print("  ".join(c.ljust(w) for c, w in zip(cells, widths)), flush=True)


def plot_learning_curves(log: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in log]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [r[f"main/{key}"] for r in log], "o-", label="train")
        ax.plot(epochs, [r[f"validation/main/{key}"] for r in log], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    """Train and evaluate as described in the module docstring; returns
    {"log": [row dicts], "scale_accuracy": {scale: accuracy}, "out": dir}."""
    check_args(args)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1)

    sets = D.load_data(args.data, args.data_root, args.train_size, args.test_size, args.seed)
    (train_images, train_labels), (test_images, test_labels) = sets["train"], sets["test"]
    train_set = D.ScaledDigits(train_images, train_labels, args.scale_min, args.scale_max)
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    val_scales = D.fixed_scales(len(test_images), args.scale_min, args.scale_max, args.seed)
    x_val = D.scaled_tensor(test_images, val_scales).to(args.device)
    y_val = torch.from_numpy(test_labels).to(args.device)

    model = build_model(args.arch, args.deform, args.modulation, args.min_deform_layer).to(
        args.device
    )
    optimizer = torch.optim.Adam(
        parameter_groups(model, args.lr, args.offset_lr_factor), lr=args.lr
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=args.gamma)

    log: list[dict] = []
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        train_loss, train_acc = train_epoch(model, loader, optimizer, args.device)
        scheduler.step()
        val_loss, val_acc = evaluate(model, x_val, y_val)
        row = {
            "epoch": epoch,
            "main/loss": train_loss,
            "validation/main/loss": val_loss,
            "main/accuracy": train_acc,
            "validation/main/accuracy": val_acc,
            "elapsed_time": time.time() - start,
        }
        log.append(row)
        if not args.quiet:
            _print_row(row, header=epoch == 1)
        _write_csv(
            os.path.join(args.out, "log.csv"),
            LOG_COLUMNS,
            [[r[c] for c in LOG_COLUMNS] for r in log],
        )
        torch.save(
            {"model": model.state_dict(), "args": vars(args), "epoch": epoch},
            os.path.join(args.out, "model.pt"),
        )

    scale_rows = []
    for s in D.TEST_SCALES:
        x = D.scaled_tensor(test_images, [s] * len(test_images)).to(args.device)
        loss, acc = evaluate(model, x, y_val)
        scale_rows.append((s, acc, loss))
        if not args.quiet:
            print(f"scale {s:.1f}: accuracy {acc:.4f}  loss {loss:.4f}", flush=True)
    _write_csv(
        os.path.join(args.out, "scale_accuracy.csv"), ("scale", "accuracy", "loss"), scale_rows
    )
    title = f"{args.arch} {run_label(vars(args))}"
    plot_learning_curves(log, os.path.join(args.out, "learning_curves.png"), title)
    return {"log": log, "scale_accuracy": {s: a for s, a, _ in scale_rows}, "out": args.out}


def load_checkpoint(path: str, device: str = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, args dict) from a `model.pt` or a run directory holding one."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"checkpoint {path} does not exist (train with tools/train_scaled_mnist.py)"
        )
    ckpt = torch.load(path, map_location=device, weights_only=False)
    a = ckpt["args"]
    model = build_model(a["arch"], a["deform"], a["modulation"], a["min_deform_layer"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), a


def read_scale_accuracy(run_dir: str) -> tuple[list[float], list[float]]:
    """(scales, accuracies) from a run's scale_accuracy.csv."""
    with open(os.path.join(run_dir, "scale_accuracy.csv")) as f:
        rows = list(csv.DictReader(f))
    return [float(r["scale"]) for r in rows], [float(r["accuracy"]) for r in rows]


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        build_parser().error(str(exc))
    return run(args)
