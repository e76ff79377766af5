#!/usr/bin/env python
"""Generate the digit-detection set (COCO format, real MNIST digits) of the mnist_det configs.

    python tools/make_mnist_det.py --out datasets/mnist_det --num-train 2000 --num-val 500 --seed 0

writes OUT/annotations/instances_{train,val}.json and the JPEG canvases OUT/train (MNIST training
digits) and OUT/val (MNIST test digits). MNIST is found as the Scaled-MNIST tools find it:
DATA_ROOT/mnist/, a torchvision download, or an error saying where to put the files. Training
with a config naming mnist_det_train / mnist_det_val generates the default set on first use.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.data.datasets.mnist import find_mnist
from detection.data.datasets.mnist_det import DEFAULTS, generate_mnist_det_dataset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="datasets/mnist_det", help="output folder (must not exist)")
    p.add_argument("--data-root", default="datasets", help="holds mnist/ (the MNIST idx files)")
    p.add_argument("--no-download", action="store_true", help="never try torchvision's download")
    for key, help_ in (
        ("num_train", "training canvases"),
        ("num_val", "validation canvases"),
        ("seed", "generator seed (same seed, same files)"),
        ("min_size", "smallest canvas side"),
        ("max_size", "largest canvas side"),
        ("min_digit", "smallest digit height (px)"),
        ("max_digit", "largest digit height (px)"),
    ):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=DEFAULTS[key], help=help_)
    args = p.parse_args(argv)
    if args.num_train < 0 or args.num_val < 0:
        p.error("--num-train and --num-val must be >= 0")
    if not 8 <= args.min_digit <= args.max_digit < args.min_size <= args.max_size:
        p.error("need 8 <= --min-digit <= --max-digit < --min-size <= --max-size")
    if os.path.exists(args.out):
        print(
            f"error: --out {args.out} exists; remove it or choose another folder", file=sys.stderr
        )
        return 2
    try:
        mnist_dir, source = find_mnist(args.data_root, download=not args.no_download)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"MNIST: {mnist_dir} ({source})")
    out = generate_mnist_det_dataset(
        args.out,
        mnist_dir,
        args.num_train,
        args.num_val,
        args.seed,
        args.min_size,
        args.max_size,
        args.min_digit,
        args.max_digit,
    )
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
