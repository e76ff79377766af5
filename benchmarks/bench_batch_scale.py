"""What an iteration of the 10-minute shapes config costs by batch size: the training step on the
real shapes batches (the config's own loader, model and AdamW) at batch scale factors
(`INPUT.BATCH_SCALES_TRAIN`, detection/data/batch_scale.py).

Each batch is stepped once at every factor in turn, in one process, so that a change of the
machine's speed during the run moves the factors together. The row of a factor gives the median
step time, the padded pixels per image and, as the figure to quote, the median over batches of
its step time over the step time of the same batch at factor 1.

    python benchmarks/bench_batch_scale.py [--batches 16] [--scales 0.75 0.875] [--config CONFIG]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import bench_ops  # noqa: E402
from bench_optimizer import CONFIG_10MIN  # noqa: E402
import run  # noqa: E402


def _setup(config: str):
    from detection.config import load_config
    from detection.modeling import build_detection_model
    from detection.solver import build_optimizer

    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"])
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    return cfg, model, build_optimizer(cfg, model)


def _batches(cfg, n: int) -> list:
    from detection.data import make_data_loader

    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.BATCH_SCALES_TRAIN = ()  # the Resize size: the factors are applied here
    cfg.SOLVER.MAX_ITER = n
    return [(images, targets) for images, targets, _ in make_data_loader(cfg, is_train=True)]


def _warm_batches(cfg, model, optimizer, n: int, warmup: int) -> list:
    """`n` real training batches of `cfg`, after `warmup` more stepped untimed."""
    batches = _batches(cfg, n + warmup)
    for images, targets in batches[:warmup]:
        _step_ms(model, optimizer, images, targets)
    return batches[warmup:]


def _step_ms(model, optimizer, images, targets) -> float:
    start = time.perf_counter()
    losses = model(images, targets)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()
    return (time.perf_counter() - start) * 1e3


def _padded_pixels(images) -> float:
    return images.tensors.shape[2] * images.tensors.shape[3]


def measure_scales(cfg, model, optimizer, batches, scales) -> list[dict]:
    from detection.data.batch_scale import rescale_batch

    size_div = cfg.DATALOADER.SIZE_DIVISIBILITY
    factors = (1.0, *scales)
    times = {f: [] for f in factors}
    pixels = {f: [] for f in factors}
    for images, targets in batches:
        for f in factors:
            im, tg = rescale_batch(images, targets, f, size_div)
            times[f].append(_step_ms(model, optimizer, im, tg))
            pixels[f].append(_padded_pixels(im))
    rows = []
    for f in factors:
        ratios = [t / t1 for t, t1 in zip(times[f], times[1.0])]
        rows.append(
            {
                "factor": f"{f:g}",
                "step ms (median)": statistics.median(times[f]),
                "padded pixels / image": statistics.mean(pixels[f]),
                "pixels vs 1": statistics.mean(pixels[f]) / statistics.mean(pixels[1.0]),
                "step vs 1 (median of per-batch ratios)": statistics.median(ratios),
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG_10MIN)
    parser.add_argument("--batches", type=int, default=16, help="batches timed")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.75, 0.875])
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    args = parser.parse_args(argv)
    if args.batches < 2 or any(not 0 < s for s in args.scales):
        print("error: --batches must be >= 2 and --scales positive", file=sys.stderr)
        return 2
    cfg, model, optimizer = _setup(args.config)
    batches = _warm_batches(cfg, model, optimizer, args.batches, args.warmup)
    print(run.environment())
    print(f"\nthreads {torch.get_num_threads()}, {args.batches} batches\n")
    rows = measure_scales(cfg, model, optimizer, batches, args.scales)
    print(bench_ops._format_table(rows, markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
