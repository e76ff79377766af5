"""OHEM in two passes against one pass (`ROIBoxHead.ohem_two_pass`) in the 10-minute shapes
config's training step on the CPU.

One pass runs the box head forward and backward over every sampled RoI (64 per image) and zeroes
the losses of the RoIs not kept; two passes rank the RoIs in a forward without autograd, then run
the head forward and backward over the 32 kept per image. Each real shapes batch is stepped once
in each mode, in turn, in one process, with the same random draw of RoIs (the config's loader,
model and AdamW): the median step time of each mode and the median of the per-batch ratios.

    python benchmarks/bench_ohem.py [--batches 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench_batch_scale import _setup, _step_ms, _warm_batches  # noqa: E402
import bench_ops  # noqa: E402
from bench_optimizer import CONFIG_10MIN  # noqa: E402
import run  # noqa: E402

MODES = (("one pass", False), ("two passes", True))


def measure_step(model, optimizer, batches) -> dict:
    head = model.roi_heads.box_head
    times = {name: [] for name, _ in MODES}
    for k, (images, targets) in enumerate(batches):
        for name, two_pass in MODES:
            head.ohem_two_pass = two_pass
            torch.manual_seed(k)  # the same sampled RoIs in both modes
            times[name].append(_step_ms(model, optimizer, images, targets))
    head.ohem_two_pass = True
    ratios = [t / o for o, t in zip(times["one pass"], times["two passes"])]
    return {
        "batches": len(batches),
        "one pass step ms (median)": statistics.median(times["one pass"]),
        "two passes step ms (median)": statistics.median(times["two passes"]),
        "two / one (median of per-batch ratios)": statistics.median(ratios),
        "quartiles of the ratios": "%.3f-%.3f" % tuple(statistics.quantiles(ratios, n=4)[::2]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG_10MIN)
    parser.add_argument("--batches", type=int, default=30, help="training batches timed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.batches < 2 or args.threads < 1:
        print("error: --batches must be >= 2 and --threads >= 1", file=sys.stderr)
        return 2
    if not os.path.isfile(args.config):
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg, model, optimizer = _setup(args.config)
    if model.roi_heads.box_head.ohem_per_image <= 0:
        print(f"error: --config {args.config} does not use OHEM", file=sys.stderr)
        return 2
    print(run.environment())
    print(f"\nthreads {torch.get_num_threads()}\n")
    batches = _warm_batches(cfg, model, optimizer, args.batches, warmup=2)
    print(bench_ops._format_table([measure_step(model, optimizer, batches)], markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
