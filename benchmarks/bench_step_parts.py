"""Where a training step of the 10-minute shapes config goes, part by part: which parts shrink
with the image and how each part scales from one thread to two.

The step is the config's own (real shapes batches from its loader, its model and AdamW). Each
batch is stepped three times in turn, in one process: at factor 1 on 2 threads, at factor 0.75
(`rescale_batch`, as INPUT.BATCH_SCALES_TRAIN does) on 2 threads, and at factor 1 on 1 thread, so
that a change of the machine's speed moves the three columns together. Figures are medians over
the batches.

The parts are timed with module hooks. A forward row is exact (the CPU runs the module's ops
between its pre- and post-hook). A backward row is the time from the gradient of the module's
outputs being ready to the gradient of its inputs being computed; the autograd engine may run
other nodes inside that interval, so these rows are approximate. "backbone and the rest" is the
step's backward minus the timed heads' backward rows.

    python benchmarks/bench_step_parts.py [--batches 12] [--scale 0.75] [--config CONFIG]
"""

from __future__ import annotations

import argparse
import collections
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

from bench_batch_scale import _setup, _warm_batches  # noqa: E402
import bench_ops  # noqa: E402
from bench_optimizer import CONFIG_10MIN  # noqa: E402
import run  # noqa: E402

# (row, module path under the model, timed in forward, timed in backward)
PARTS = (
    ("backbone", "backbone", True, False),
    ("RPN (head, anchors, losses, proposals)", "rpn", True, False),
    ("RPN head convs", "rpn.head", True, True),
    ("RoI heads", "roi_heads", True, False),
    ("RoI reduce conv", "roi_heads.reduce_conv", True, True),
    ("box head (sampling, features, losses)", "roi_heads.box_head", True, False),
    ("box head features (pooling, fcs)", "roi_heads.box_head.feature_extractor", True, True),
    ("box head pooling", "roi_heads.box_head.feature_extractor.pooler", True, False),
    ("mask head (targets, head, loss)", "roi_heads.mask_head", True, False),
    ("mask head network (pooling, convs)", "roi_heads.mask_head.head", True, True),
    ("mask head pooling", "roi_heads.mask_head.head.pooler", True, False),
)


def _module(model, path: str):
    for name in path.split("."):
        model = getattr(model, name, None)
        if model is None:
            return None
    return model


class PartTimer:
    """Forward and backward hooks that add each part's time of the current step to `times`."""

    def __init__(self, model) -> None:
        self.times: dict[str, float] = collections.defaultdict(float)
        self.rows: list[str] = []
        for row, path, fwd, bwd in PARTS:
            module = _module(model, path)
            if module is None:
                continue
            if fwd:
                self._hook(module, f"forward: {row}", backward=False)
            if bwd:
                self._hook(module, f"backward: {row}", backward=True)

    def _hook(self, module, key: str, backward: bool) -> None:
        start = [0.0]

        def begin(*_):
            start[0] = time.perf_counter()

        def end(*_):
            self.times[key] += time.perf_counter() - start[0]

        if backward:
            module.register_full_backward_pre_hook(begin)
            module.register_full_backward_hook(end)
        else:
            module.register_forward_pre_hook(begin)
            module.register_forward_hook(end)
        self.rows.append(key)

    def step(self, model, optimizer, images, targets) -> dict[str, float]:
        """One training step; seconds per part, with the totals and the backward remainder."""
        self.times.clear()
        t0 = time.perf_counter()
        losses = model(images, targets)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        out = dict(self.times)
        out["forward (all)"] = t1 - t0
        out["backward (all)"] = t2 - t1
        heads = sum(v for k, v in self.times.items() if k.startswith("backward: "))
        out["backward: backbone and the rest"] = (t2 - t1) - heads
        out["optimizer step"] = t3 - t2
        out["training step"] = t3 - t0
        return out


def measure(model, optimizer, batches, scale: float, size_div: int) -> list[dict]:
    from detection.data.batch_scale import rescale_batch

    timer = PartTimer(model)
    columns = (("full", 1.0, 2), ("scaled", scale, 2), ("1 thread", 1.0, 1))
    samples = {c: collections.defaultdict(list) for c, _, _ in columns}
    threads = torch.get_num_threads()
    try:
        for images, targets in batches:
            for column, factor, n in columns:
                torch.set_num_threads(n)
                im, tg = rescale_batch(images, targets, factor, size_div)
                for key, sec in timer.step(model, optimizer, im, tg).items():
                    samples[column][key].append(sec * 1e3)
    finally:
        torch.set_num_threads(threads)
    order = ["training step", "forward (all)"]
    order += [k for k in timer.rows if k.startswith("forward: ")]
    order += ["backward (all)"] + [k for k in timer.rows if k.startswith("backward: ")]
    order += ["backward: backbone and the rest", "optimizer step"]
    med = {c: {k: statistics.median(v) for k, v in s.items()} for c, s in samples.items()}
    step = med["full"]["training step"]
    rows = []
    for key in order:
        full, scaled, one = med["full"][key], med["scaled"][key], med["1 thread"][key]
        rows.append(
            {
                "part": key,
                "ms, 2 threads": full,
                "share of the step": f"{100 * full / step:.0f} %",
                f"ms at factor {scale:g}": scaled,
                f"factor {scale:g} / 1": scaled / full,
                "ms, 1 thread": one,
                "1 thread / 2 threads": one / full,
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG_10MIN)
    parser.add_argument("--batches", type=int, default=12, help="batches timed")
    parser.add_argument("--scale", type=float, default=0.75, help="the smaller batches' factor")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = parser.parse_args(argv)
    if args.batches < 1 or not 0 < args.scale:
        print("error: --batches must be >= 1 and --scale positive", file=sys.stderr)
        return 2
    if not os.path.isfile(args.config):
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    cfg, model, optimizer = _setup(args.config)
    # the warm-up steps run before the hooks exist
    batches = _warm_batches(cfg, model, optimizer, args.batches, args.warmup)
    print(run.environment())
    print(f"\n{args.batches} batches, each at factor 1 and {args.scale:g} on 2 threads and at")
    print("factor 1 on 1 thread; medians over the batches\n")
    rows = measure(model, optimizer, batches, args.scale, cfg.DATALOADER.SIZE_DIVISIBILITY)
    print(bench_ops._format_table(rows, markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
