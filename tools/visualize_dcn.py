"""Pictures of how a trained deformable Scaled-MNIST network samples.

    python tools/visualize_dcn.py --run work_space/scaled_mnist/dcnv2 \
        --compare-run work_space/scaled_mnist/regular --image 3 --scale 0.6 1.0 1.4 --out DIR

writes DIR/sampling_locations.png (the (3x3)^L sampling points of the stacked deformable layers
for one output unit, traced back to the input, next to the fixed grid of regular convs) and
DIR/gradients.png (|d output / d input| for the deformable model and, with --compare-run, the
regular one side by side). --image is an index into the run's test set or a PNG file.
With --spread-images N it also writes DIR/spread.csv and DIR/spread.png: the mean distance of
the traced sampling points from their output unit over the first N test images at each test
scale, for --run and every deformable run in --spread-runs, against the fixed grid.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import csv  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detection.experiments import visualize as V  # noqa: E402
from detection.experiments.scaled_mnist import data as D  # noqa: E402
from detection.experiments.scaled_mnist.train import load_checkpoint, run_label  # noqa: E402
from detection.utils import cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory of a deformable model (holds model.pt)")
    src.add_argument("--ckpt", help="a model.pt file")
    p.add_argument("--compare-run", help="run directory or model.pt of a regular model for (b)")
    p.add_argument("--image", default="0", help="index into the run's test set, or a PNG file")
    p.add_argument(
        "--scale",
        type=float,
        nargs="+",
        default=[1.0],
        help="scale(s) applied to the image (one figure row each)",
    )
    p.add_argument(
        "--position",
        type=float,
        nargs=2,
        metavar=("Y", "X"),
        default=None,
        help="output position in input pixels (default: centre)",
    )
    p.add_argument("--data-root", default=None, help="override the run's --data-root")
    p.add_argument(
        "--spread-images",
        type=int,
        default=0,
        help="N > 0: also measure the sampling spread over N test images per scale",
    )
    p.add_argument(
        "--spread-runs",
        nargs="*",
        default=[],
        help="more deformable runs (e.g. DCNv1) for the spread measurement",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", required=True, help="output directory for the PNG files")
    return p


def load_image(spec: str, args: dict, data_root: str | None) -> tuple[np.ndarray, str]:
    """(uint8[28, 28] white-on-black digit, a short description) from an index or a PNG path."""
    if spec.isdigit():
        root = data_root or args["data_root"]
        images, labels = D.load_data(
            args.get("data_used", args["data"]),
            root,
            args["train_size"],
            args["test_size"],
            args["seed"],
        )[0]["test"]
        index = int(spec)
        if index >= len(images):
            raise SystemExit(
                f"--image {index} is out of range: the test set has {len(images)} images"
            )
        return images[index], f"test #{index} (label {labels[index]})"
    img = cv2.imread(spec, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"--image {spec!r} is neither a test-set index nor a readable image file")
    img = cv2.resize(img, (D.IMAGE_SIZE, D.IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    if img.mean() > 127:  # dark digit on light paper: make it MNIST-like
        img = 255 - img
    return img, os.path.basename(spec)


def _spread_label(args: dict) -> str:
    """run_label plus the offset lr factor, for a --spread-runs run whose run_label is taken."""
    olr = args.get("offset_lr_factor")
    return run_label(args) + (f" (offset lr x{olr:g})" if olr is not None else "")


def write_spread(a, model, margs, out: str) -> list[str]:
    """spread.csv / spread.png for --run and --spread-runs over the first --spread-images images."""
    images, _ = D.load_data(
        margs.get("data_used", margs["data"]),
        a.data_root or margs["data_root"],
        margs["train_size"],
        margs["test_size"],
        margs["seed"],
    )[0]["test"]
    images = images[: a.spread_images]
    models = {run_label(margs): model}
    for run in a.spread_runs:
        m, args = load_checkpoint(run)
        if not args["deform"]:
            raise SystemExit(f"--spread-runs {run} is not a deformable model")
        label = run_label(args)
        models.setdefault(label if label not in models else _spread_label(args), m)
    spreads = {name: [] for name in models}
    fixed = 0.0
    for s in D.TEST_SCALES:
        x = D.scaled_tensor(images, [s] * len(images))
        for name, m in models.items():
            values, fixed = V.sampling_spread(m, x, a.position)
            spreads[name].append(float(values.mean()))
    paths = [os.path.join(out, "spread.csv"), os.path.join(out, "spread.png")]
    with open(paths[0], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scale", *spreads, "fixed_grid"])
        for i, s in enumerate(D.TEST_SCALES):
            w.writerow([s, *(round(v[i], 4) for v in spreads.values()), round(fixed, 4)])
    V.plot_spread(list(D.TEST_SCALES), spreads, fixed, paths[1])
    return paths


def _load(path: str, flag: str):
    """load_checkpoint; a file that is not a Scaled-MNIST model.pt is a UsageError naming it."""
    try:
        return load_checkpoint(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # unpicklable, or a checkpoint of another kind (KeyError, ...)
        raise cli.UsageError(
            f"{flag}: {path} is not a model.pt of tools/train_scaled_mnist.py ({exc!r:.120})"
        ) from None


def main(argv=None) -> list[str]:
    a = build_parser().parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    model, margs = _load(a.run or a.ckpt, "--run" if a.run else "--ckpt")
    if not margs["deform"]:
        raise cli.UsageError("--run must be a deformable model (trained with --deform True)")
    compare = _load(a.compare_run, "--compare-run") if a.compare_run else None
    base, desc = load_image(a.image, margs, a.data_root)
    os.makedirs(a.out, exist_ok=True)
    name = run_label(margs)
    sampling_rows, grad_rows = [], []
    for s in a.scale:
        image = D.scale_image(base, s)
        x = D.to_tensor(image)[None]
        layers = V.capture_sampling(model, x)
        hw = image.shape
        unit, levels = V.trace_sampling_points(layers, a.position, hw)
        _, fixed = V.trace_sampling_points(layers, a.position, hw, zero_offsets=True)
        unit_xy = V.unit_to_image(unit, layers[-1].out_hw, hw)
        title = f"{desc}, scale {s:g}"
        sampling_rows.append(
            {"image": image, "title": title, "unit_xy": unit_xy, "levels": levels, "fixed": fixed}
        )
        grads = {name: V.input_gradients(model, x, unit)}
        if compare is not None:
            other = run_label(compare[1])
            grads[other if other != name else other + " [compare]"] = V.input_gradients(
                compare[0], x, unit
            )
        grad_rows.append({"image": image, "title": title, "grads": grads})
    paths = [os.path.join(a.out, "sampling_locations.png"), os.path.join(a.out, "gradients.png")]
    V.plot_sampling(sampling_rows, paths[0])
    V.plot_gradients(grad_rows, list(grad_rows[0]["grads"]), paths[1])
    if a.spread_images > 0:
        paths += write_spread(a, model, margs, a.out)
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    status = cli.run_tool(main)
    if status:  # run as a script or through runpy, success returns normally
        sys.exit(status)
