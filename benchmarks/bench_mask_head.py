"""The mask head's convs channels-last against NCHW on the CPU (`MaskHead.channels_last`), in the
10-minute shapes config.

Two tables, each measured in one process with the two layouts alternated:
- the mask head network alone (deformable RoI pooling to 14x14, the 3x3 convs, the deconv and the
  logits), forward plus backward, on the config's reduced C5 map (4 images at 256 x 352, 64
  channels) for R random RoIs: the best time of each layout and their ratio;
- the whole training step on real shapes batches (the config's loader, model and AdamW): each
  batch stepped once with each layout; the median step time of each and the median of the
  per-batch ratios.

    python benchmarks/bench_mask_head.py [--rounds 7] [--batches 12] [--threads 2]
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

from bench_batch_scale import _setup, _step_ms, _warm_batches  # noqa: E402
import bench_ops  # noqa: E402
from bench_optimizer import CONFIG_10MIN  # noqa: E402
import run  # noqa: E402

LAYOUTS = (("NCHW", False), ("channels-last", True))


def _rois(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
    wh = 8 + torch.rand(n, 2, generator=g) * torch.tensor([width * 0.4, height * 0.4])
    batch = torch.randint(0, 4, (n, 1), generator=g).float()
    return torch.cat([batch, xy, xy + wh], 1)


def measure_head(head, rois_counts, rounds: int) -> list[dict]:
    """Forward+backward of `head` (a MaskHead) on a random reduced map, per RoI count."""
    channels = head.convs[0].in_channels
    g = torch.Generator().manual_seed(0)
    reduced = torch.randn(4, channels, 16, 22, generator=g)  # C5 of 256 x 352 images, stride 16
    rows = []
    for n in rois_counts:
        rois = _rois(n, 256, 352)
        best = {name: float("inf") for name, _ in LAYOUTS}
        for _ in range(rounds):
            for name, channels_last in LAYOUTS:
                head.channels_last = channels_last
                x = reduced.clone().requires_grad_()
                start = time.perf_counter()
                head(x, rois).sum().backward()
                best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
        rows.append(
            {
                "RoIs": n,
                "NCHW ms (best)": best["NCHW"],
                "channels-last ms (best)": best["channels-last"],
                "channels-last / NCHW": best["channels-last"] / best["NCHW"],
            }
        )
    head.channels_last = True
    return rows


def measure_step(model, optimizer, batches) -> dict:
    head = model.roi_heads.mask_head.head
    times = {name: [] for name, _ in LAYOUTS}
    for images, targets in batches:
        for name, channels_last in LAYOUTS:
            head.channels_last = channels_last
            times[name].append(_step_ms(model, optimizer, images, targets))
    head.channels_last = True
    ratios = [c / n for n, c in zip(times["NCHW"], times["channels-last"])]
    return {
        "batches": len(batches),
        "NCHW step ms (median)": statistics.median(times["NCHW"]),
        "channels-last step ms (median)": statistics.median(times["channels-last"]),
        "channels-last / NCHW (median of per-batch ratios)": statistics.median(ratios),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG_10MIN)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the head alone")
    parser.add_argument("--batches", type=int, default=12, help="training batches timed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batches < 1 or args.threads < 1:
        print("error: --rounds, --batches and --threads must be >= 1", file=sys.stderr)
        return 2
    if not os.path.isfile(args.config):
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg, model, optimizer = _setup(args.config)
    if model.roi_heads.mask_head is None:
        print(f"error: --config {args.config} has no mask head", file=sys.stderr)
        return 2
    print(run.environment())
    print(f"\nthreads {torch.get_num_threads()}\n")
    rows = measure_head(model.roi_heads.mask_head.head, (40, 60, 80), args.rounds)
    print(bench_ops._format_table(rows, markdown=True), flush=True)
    batches = _warm_batches(cfg, model, optimizer, args.batches, warmup=2)
    print()
    print(bench_ops._format_table([measure_step(model, optimizer, batches)], markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
