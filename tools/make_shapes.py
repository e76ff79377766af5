#!/usr/bin/env python
"""Generate the synthetic shapes dataset (COCO format) used by the shapes configs and demo.

    python tools/make_shapes.py --out datasets/shapes --num-train 2000 --num-val 200 --seed 0

writes OUT/annotations/instances_{train,val}.json and the JPEG images OUT/train, OUT/val, and
with --num-test N a held-out split OUT/test (shapes_test; the data layer also generates it, 500
images, the first time a config names it).
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.data.datasets.shapes import generate_shapes_dataset  # noqa: E402
from detection.utils import cli  # noqa: E402


@cli.cli_main
def main(argv=None) -> int:
    p = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="datasets/shapes", help="output folder")
    p.add_argument("--num-train", type=int, default=2000, help="training images")
    p.add_argument("--num-val", type=int, default=200, help="validation images")
    p.add_argument("--num-test", type=int, default=0, help="held-out test images (0: none)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same files)")
    p.add_argument("--min-size", type=int, default=128, help="smallest image side")
    p.add_argument("--max-size", type=int, default=256, help="largest image side")
    args = p.parse_args(argv)
    if min(args.num_train, args.num_val, args.num_test) < 0:
        p.error("--num-train, --num-val and --num-test must be >= 0")
    if not 16 <= args.min_size <= args.max_size:
        p.error("need 16 <= --min-size <= --max-size")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = generate_shapes_dataset(
        args.out,
        args.num_train,
        args.num_val,
        args.seed,
        args.min_size,
        args.max_size,
        num_test=args.num_test,
    )
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
