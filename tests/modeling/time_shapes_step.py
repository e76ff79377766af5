"""Seconds per CPU training iteration of the shapes config (batch 4), with synthetic inputs.

    python tests/modeling/time_shapes_step.py [--threads N] [--iters K] [--config PATH]

Images of the config's training size (shorter side INPUT.MIN_SIZE_TRAIN[0], aspect 4:3) with
three rectangle objects each; forward + backward + SGD step; prints the mean of the timed
iterations after two warm-up iterations, and a per-component breakdown of the forward pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from conftest import make_target  # noqa: E402

from detection.config import load_config  # noqa: E402
from detection.modeling import build_detection_model  # noqa: E402


def batch(cfg, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = cfg.INPUT.MIN_SIZE_TRAIN[0]
    w = min(cfg.INPUT.MAX_SIZE_TRAIN, h * 4 // 3)
    images, targets = [], []
    for _ in range(n):
        img = torch.randn(3, h, w, generator=g) * 30
        boxes, labels = [], []
        for k in range(3):
            s = int(torch.randint(16, h // 2, (1,), generator=g))
            x = int(torch.randint(0, w - s, (1,), generator=g))
            y = int(torch.randint(0, h - s, (1,), generator=g))
            img[:, y : y + s, x : x + s] += 80.0
            boxes.append([x, y, x + s, y + s])
            labels.append(k + 1)
        images.append(img)
        targets.append(make_target((w, h), boxes, labels))
    return images, targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/shapes/e2e_deformconv_mask_rcnn_shapes.yaml")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, world_size=1)  # `_BASE_` files too
    cfg.defrost()
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    images, targets = batch(cfg, args.batch)
    times = []
    for i in range(args.iters + 2):
        t = time.perf_counter()
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.config}: {n_params / 1e6:.2f} M parameters, batch {args.batch}, "
        f"{args.threads} thread(s): {sum(times) / len(times):.3f} s/iter "
        f"(min {min(times):.3f}, max {max(times):.3f})"
    )


if __name__ == "__main__":
    main()
