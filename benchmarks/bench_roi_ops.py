"""RoI op benchmarks; every ratio is against a baseline measured in the same run.

- modulated_deform_roi_pool (offset and mask given, forward+backward into input, offset and mask)
  against our roi_align (aligned, forward+backward into input) on the same RoIs: 1024 RoIs over
  2 images, 256 channels, a 50x68 map (stride 16), sampling_ratio 2, 7x7 and 14x14 outputs;
- our roi_align against torchvision.ops.roi_align, forward and forward+backward, same shapes;
- nms against torchvision.ops.nms on 12000 boxes.

Rows: dict(op, name, device, shape, ours_ms, baseline, baseline_ms, ratio = ours / baseline), the
best of `repeat` timed runs after one warm-up. Used by benchmarks/bench_ops.py through
``run(device, repeat)``; runnable alone:

    python benchmarks/bench_roi_ops.py [--repeat 3] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torchvision  # noqa: E402

from detection.layers import modulated_deform_roi_pool, nms, roi_align  # noqa: E402

NUM_IMAGES, CHANNELS, HEIGHT, WIDTH, STRIDE = 2, 256, 50, 68, 16
NUM_ROIS, SAMPLING_RATIO, NUM_BOXES = 1024, 2, 12000


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, repeat: int, warmup: int = 1) -> float:
    """Best wall time of `fn` in ms over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, (time.perf_counter() - start) * 1e3)
    return best


def _rois(device: str, seed: int = 0) -> torch.Tensor:
    """RPN-like proposals: random boxes of 16..400 px inside an 800 x 1088 image."""
    g = torch.Generator().manual_seed(seed)
    img_h, img_w = HEIGHT * STRIDE, WIDTH * STRIDE
    wh = 16 + torch.rand(NUM_ROIS, 2, generator=g) * 384
    x1 = torch.rand(NUM_ROIS, generator=g) * (img_w - wh[:, 0])
    y1 = torch.rand(NUM_ROIS, generator=g) * (img_h - wh[:, 1])
    b = torch.arange(NUM_ROIS) % NUM_IMAGES
    rois = torch.stack([b.float(), x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], dim=1)
    return rois.to(device)


def _boxes(device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(NUM_BOXES, 2, generator=g) * 1000
    wh = 8 + torch.rand(NUM_BOXES, 2, generator=g) * 200
    return torch.cat([xy, xy + wh], 1).to(device), torch.rand(NUM_BOXES, generator=g).to(device)


def _fwd_bwd(
    fn: Callable[..., torch.Tensor], leaves: list[torch.Tensor], *args
) -> Callable[[], None]:
    def run() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*leaves, *args)
        out.backward(torch.ones_like(out))

    return run


def _row(op, name, device, shape, ours_ms, baseline, baseline_ms) -> dict:
    return dict(op=op, name=name, device=device, shape=shape, ours_ms=ours_ms, baseline=baseline,
                baseline_ms=baseline_ms, ratio=ours_ms / baseline_ms)  # fmt: skip


def run(device: str, repeat: int) -> list[dict]:
    """All RoI op rows on `device` ("cpu" or "cuda")."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_IMAGES, CHANNELS, HEIGHT, WIDTH, generator=g).to(device)
    rois = _rois(device)
    scale = 1.0 / STRIDE
    rows = []
    for size in (7, 14):
        shape = f"R={NUM_ROIS},C={CHANNELS},{HEIGHT}x{WIDTH},out={size}x{size},sr={SAMPLING_RATIO}"
        offset = (torch.randn(NUM_ROIS, 2, size, size, generator=g) * 0.1).to(device)
        mask = torch.rand(NUM_ROIS, 1, size, size, generator=g).to(device)

        def deform(inp, off, msk):
            return modulated_deform_roi_pool(inp, rois, off, msk, output_size=size,
                                             spatial_scale=scale, sampling_ratio=SAMPLING_RATIO)  # fmt: skip

        def ours_align(inp):
            return roi_align(inp, rois, size, scale, SAMPLING_RATIO, True)

        def tv_align(inp):
            return torchvision.ops.roi_align(inp, rois, size, scale, SAMPLING_RATIO, True)

        leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
        x_leaf = [x.clone().requires_grad_()]
        t_deform = time_ms(_fwd_bwd(deform, leaves), device, repeat)
        t_align_fb = time_ms(_fwd_bwd(ours_align, x_leaf), device, repeat)
        t_tv_fb = time_ms(_fwd_bwd(tv_align, x_leaf), device, repeat)
        with torch.no_grad():
            t_deform_f = time_ms(lambda: deform(x, offset, mask), device, repeat)
            t_align_f = time_ms(lambda: ours_align(x), device, repeat)
            t_tv_f = time_ms(lambda: tv_align(x), device, repeat)
        op = "modulated_deform_roi_pool"
        rows.append(_row(op, "fwd", device, shape, t_deform_f, "our roi_align", t_align_f))
        rows.append(_row(op, "fwd+bwd", device, shape, t_deform, "our roi_align", t_align_fb))
        rows.append(_row("roi_align", "fwd", device, shape, t_align_f, "torchvision", t_tv_f))
        rows.append(_row("roi_align", "fwd+bwd", device, shape, t_align_fb, "torchvision", t_tv_fb))
    boxes, scores = _boxes(device)
    t_nms = time_ms(lambda: nms(boxes, scores, 0.7), device, repeat)
    t_tv_nms = time_ms(lambda: torchvision.ops.nms(boxes, scores, 0.7), device, repeat)
    rows.append(_row("nms", "iou=0.7", device, f"K={NUM_BOXES}", t_nms, "torchvision", t_tv_nms))
    return rows


def _print(rows: list[dict]) -> None:
    keys = ["op", "name", "device", "shape", "ours_ms", "baseline", "baseline_ms", "ratio"]
    cells = [keys] + [
        [f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per measurement (best kept)"
    )
    parser.add_argument(
        "--devices", default="cpu,cuda", help="comma list; cuda skipped without a GPU"
    )
    args = parser.parse_args()
    rows = []
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: no GPU visible, skipped")
            continue
        rows += run(device, args.repeat)
    _print(rows)


if __name__ == "__main__":
    main()
