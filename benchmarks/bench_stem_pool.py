"""The stem's max pool on a channels-last copy against ATen's NCHW pool on the CPU, in inference
(`Stem.channels_last_pool`): the pool alone at the shapes demo's and the ResNet-50 paper
config's stem shapes, and the 10-minute shapes config's whole inference, the two modes
alternated batch by batch in one process. Medians over the repeats or batches.

    python benchmarks/bench_stem_pool.py [--threads 2] [--batches 12] [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# (N, C, H, W) of the stem's ReLU output: the shapes demo at 256 x 352 (batch 4), the ResNet-50
# paper config at 800 x 1216 (batch 1)
POOL_SHAPES = {"demo": (4, 16, 128, 176), "R-50": (1, 64, 400, 608)}


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def pool_rows(repeat: int) -> list[tuple]:
    rows = []
    for name, shape in POOL_SHAPES.items():
        x = torch.relu(torch.randn(shape))

        def nchw():
            F.max_pool2d(x, 3, 2, 1)

        def channels_last():
            F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, 2, 1).contiguous()

        nchw(), channels_last()
        a, b = [], []
        for _ in range(repeat):
            a.append(_ms(nchw))
            b.append(_ms(channels_last))
        rows.append((f"pool {name} {shape}", statistics.median(a), statistics.median(b)))
    return rows


def inference_row(batches: int) -> tuple:
    from bench_batch_scale import _batches, _setup
    from bench_optimizer import CONFIG_10MIN

    cfg, model, _ = _setup(CONFIG_10MIN)
    model.eval()
    data = _batches(cfg, batches + 1)
    stem = model.backbone.stem
    a, b = [], []
    with torch.no_grad():
        model(data[0][0])
        for images, _ in data[1:]:
            for on, times in ((False, a), (True, b)):
                stem.channels_last_pool = on
                times.append(_ms(lambda: model(images)))
    return ("inference, 10-minute config (4 images)", statistics.median(a), statistics.median(b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = pool_rows(args.repeat) + [inference_row(args.batches)]
    print(f"{args.threads} thread(s); ms, medians\n")
    print("| | NCHW | channels-last copy | ratio |")
    print("|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
