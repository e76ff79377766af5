"""Train and evaluate a Scaled-MNIST classifier (regular, DCNv1 or DCNv2); CLI in
`tools/train_scaled_mnist.py`. Over 350 lines: the protocol, its argument checks and the run
record (args.json, summary.json, interruption) are read together.

Protocol: every training image is scaled by a fresh random factor in [scale_min, scale_max] and
padded/cropped back to 28x28; after each epoch the test set is evaluated at one fixed random scale
per image (the "validation" columns); after training it is evaluated separately at each scale of
`TEST_SCALES` (0.5, 0.6, ..., 1.5).

The test set is also evaluated at every scale of `TEST_SCALES` after every epoch
(`scale_log.csv`), and `summary.json` holds those per-epoch accuracies, the best epoch (highest
mean over the scales) and the final one.

Data (`--data`): "auto" (the default) uses real MNIST when `find_mnist` finds or downloads it and
falls back to the synthetic digits otherwise; "mnist" insists on real MNIST; "synthetic" never
looks for it. `args.json` records the arguments as given plus what actually ran ("data_used",
"data_dir", the sizes after truncation, "modulation" None for regular nets, "deformable_layers",
"threads") and the run's "status": "running", "completed" or "interrupted" (Ctrl-C or SIGTERM; a
run killed harder stays "running" with its "epochs_completed").

Outputs under `--out`: `log.csv` (epoch, main/loss, validation/main/loss, main/accuracy,
validation/main/accuracy, elapsed_time), `scale_log.csv` (epoch, scale, accuracy, loss),
`scale_accuracy.csv` (scale, accuracy, loss of the final model), `summary.json`,
`learning_curves.png`, `args.json` and `model.pt` (a dict with "model", "args", "epoch").
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from detection.experiments.scaled_mnist import data as D
from detection.experiments.scaled_mnist.models import (
    ARCHS,
    build_model,
    deformable_layers,
    parameter_groups,
)
from detection.utils.cli import ArgumentParser

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
    p = ArgumentParser(description="Scaled-MNIST with and without deformable convs.")
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
    p.add_argument(
        "--data",
        choices=("auto", "mnist", "synthetic"),
        default="auto",
        help="auto: real MNIST when found (or downloadable), else synthetic digits",
    )
    p.add_argument(
        "--data-root",
        default="datasets",
        help="holds mnist/ (real MNIST idx files) and synthetic_digits/ (the cache)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="never try torchvision's MNIST download"
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


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _scaled_test_sets(images: np.ndarray) -> dict[float, np.ndarray]:
    """uint8 copies of `images` at every test scale (normalised per batch when evaluated)."""
    return {s: np.stack([D.scale_image(im, s) for im in images]) for s in D.TEST_SCALES}


@torch.no_grad()
def evaluate_uint8(model, images: np.ndarray, y: torch.Tensor, device, batch: int = 128):
    """(mean cross-entropy, accuracy) on uint8 `[N, 28, 28]` images (normalised like to_tensor)."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).float().div_(255.0)
        x = ((x - D.MNIST_MEAN) / D.MNIST_STD).unsqueeze(1).to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y[i : i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(images), correct / len(images)


def _run(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    sets, data_info = D.load_data(
        args.data,
        args.data_root,
        args.train_size,
        args.test_size,
        args.seed,
        download=not args.no_download,
    )
    if "data_note" in data_info:
        print(f"warning: {data_info['data_note']}", file=sys.stderr, flush=True)
    (train_images, train_labels), (test_images, test_labels) = sets["train"], sets["test"]
    model = build_model(args.arch, args.deform, args.modulation, args.min_deform_layer).to(
        args.device
    )
    os.makedirs(args.out, exist_ok=True)
    record = dict(vars(args))
    record.update(
        data_used=data_info["data"],
        data_dir=data_info["data_dir"],
        data_source=data_info["data_source"],
        train_size=len(train_images),
        test_size=len(test_images),
        modulation=args.modulation if args.deform else None,
        min_deform_layer=model.min_deform_layer if args.deform else None,
        deformable_layers=[n for n, _ in deformable_layers(model)],
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        status="running",
        epochs_completed=0,
    )
    if "data_note" in data_info:
        record["data_note"] = data_info["data_note"]
    args_path = os.path.join(args.out, "args.json")
    _write_json(args_path, record)

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
    scaled_test = _scaled_test_sets(test_images)
    fixed_scale = args.scale_min if args.scale_min == args.scale_max else None

    optimizer = torch.optim.Adam(
        parameter_groups(model, args.lr, args.offset_lr_factor), lr=args.lr
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=args.gamma)

    log: list[dict] = []
    scale_log: list[tuple] = []
    epochs: list[dict] = []
    start = time.time()
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for epoch in range(1, args.epochs + 1):
            train_loss, train_acc = train_epoch(model, loader, optimizer, args.device)
            scheduler.step()
            train_time = time.time() - start
            per_scale, per_scale_loss = {}, {}
            for s, imgs in scaled_test.items():
                per_scale_loss[s], per_scale[s] = evaluate_uint8(model, imgs, y_val, args.device)
                scale_log.append((epoch, s, per_scale[s], per_scale_loss[s]))
            if fixed_scale in per_scale:  # validation at one fixed scale: already measured
                val_loss, val_acc = per_scale_loss[fixed_scale], per_scale[fixed_scale]
            else:
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
            epochs.append(
                {
                    **row,
                    "train_time_through_epoch": train_time,
                    "scale_accuracy": {f"{s:.1f}": a for s, a in per_scale.items()},
                    "mean_scale_accuracy": float(np.mean(list(per_scale.values()))),
                }
            )
            if not args.quiet:
                _print_row(row, header=epoch == 1)
                print(
                    "  scales: "
                    + " ".join(f"{s:.1f}:{a:.4f}" for s, a in per_scale.items())
                    + f"  mean {epochs[-1]['mean_scale_accuracy']:.4f}",
                    flush=True,
                )
            _write_csv(
                os.path.join(args.out, "log.csv"),
                LOG_COLUMNS,
                [[r[c] for c in LOG_COLUMNS] for r in log],
            )
            _write_csv(
                os.path.join(args.out, "scale_log.csv"),
                ("epoch", "scale", "accuracy", "loss"),
                scale_log,
            )
            torch.save(
                {"model": model.state_dict(), "args": record, "epoch": epoch},
                os.path.join(args.out, "model.pt"),
            )
            record["epochs_completed"] = epoch
            _write_json(args_path, record)
            _write_json(os.path.join(args.out, "summary.json"), _summary(record, epochs))
    except (KeyboardInterrupt, _Terminated):
        record["status"] = "interrupted"
        _write_json(args_path, record)
        _write_json(os.path.join(args.out, "summary.json"), _summary(record, epochs))
        raise KeyboardInterrupt(
            f"interrupted after {len(epochs)} epoch(s); {args.out} marked"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, old_handler)

    scale_rows = [(s, acc, loss) for epoch, s, acc, loss in scale_log if epoch == args.epochs]
    for s, acc, loss in scale_rows:
        if not args.quiet:
            print(f"scale {s:.1f}: accuracy {acc:.4f}  loss {loss:.4f}", flush=True)
    _write_csv(
        os.path.join(args.out, "scale_accuracy.csv"), ("scale", "accuracy", "loss"), scale_rows
    )
    title = f"{args.arch} {run_label(record)} ({record['data_used']})"
    plot_learning_curves(log, os.path.join(args.out, "learning_curves.png"), title)
    record["status"] = "completed"
    record["wall_time_s"] = time.time() - start
    _write_json(args_path, record)
    summary = _summary(record, epochs)
    _write_json(os.path.join(args.out, "summary.json"), summary)
    return {
        "log": log,
        "scale_accuracy": {s: a for s, a, _ in scale_rows},
        "out": args.out,
        "summary": summary,
    }


def _summary(record: dict, epochs: list[dict]) -> dict:
    """The run's args record, every epoch's per-scale accuracies, the best and the final epoch."""
    out = {"args": record, "label": run_label(record), "status": record["status"]}
    out["epochs"] = epochs
    if epochs:
        best = max(epochs, key=lambda e: e["mean_scale_accuracy"])
        out["best"] = {k: best[k] for k in ("epoch", "mean_scale_accuracy", "scale_accuracy")}
        last = epochs[-1]
        out["final"] = {k: last[k] for k in ("epoch", "mean_scale_accuracy", "scale_accuracy")}
    return out


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


def cli(argv: list[str] | None = None) -> int:
    """`main` for tools/: bad input or missing data is one `error:` line and exit 2; an
    interrupted run exits 130 after marking its args.json."""
    try:
        main(argv)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    return 0
