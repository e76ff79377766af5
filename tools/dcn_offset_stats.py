#!/usr/bin/env python
"""How far a detector's deformable convs deform: offset and modulation statistics per layer.

    python tools/dcn_offset_stats.py --config FILE [--ckpt PATH] [--images N] [KEY VALUE ...]

Runs the model (--ckpt, default WORKSPACE/final/model_final.pth) on the first N images of
DATASETS.TEST[0] (test-time resize) and prints, for every conv with an offset predictor
(`conv_offset`), the mean and 99th percentile of |offset| (in pixels of that layer's input map;
the kernel's taps are 1 dilation apart) and the mean modulation (DCNv2; 1 for DCNv1). Offsets
start at exactly zero, so values near zero after training mean the layer still samples the
regular grid: a DCN config then differs from the regular one by little more than its noise.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch)

# isort: split

import torch

from detection.engine.setup import build_test_loaders, load_config
from detection.utils import cli


def offset_stats(model: torch.nn.Module, images) -> list[dict]:
    """Run `model` (eval) on `images` (a list of `Tensor[3, H, W]` or an ImageList) and return,
    per deformable conv in forward order, {"layer", "abs_mean", "abs_p99", "mask_mean"}."""
    layers = {m: n for n, m in model.named_modules() if getattr(m, "conv_offset", None) is not None}
    outputs: dict[str, list[torch.Tensor]] = {}
    order: list[str] = []

    def hook(name):
        def fn(mod, inp, out):
            if name not in outputs:
                order.append(name)
            outputs.setdefault(name, []).append(out.detach())

        return fn

    hooks = [m.conv_offset.register_forward_hook(hook(n)) for m, n in layers.items()]
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    stats = []
    for name in order:
        mod = model.get_submodule(name)
        out = torch.cat([o.flatten(2) for o in outputs[name]], dim=2)  # [N, C, HW...]
        if mod.modulation:
            o1, o2, m = torch.chunk(out, 3, dim=1)
            offset, mask = torch.cat((o1, o2), dim=1), torch.sigmoid(m)
        else:
            offset, mask = out, torch.ones(1)
        a = offset.abs().flatten().float()
        stats.append(
            {
                "layer": name,
                "abs_mean": float(a.mean()),
                "abs_p99": float(torch.quantile(a[:: max(1, a.numel() // 100000)], 0.99)),
                "mask_mean": float(mask.mean()),
            }
        )
    return stats


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument(
        "--ckpt", default="", help="checkpoint (default WORKSPACE/final/model_final.pth)"
    )
    p.add_argument("--images", type=int, default=8, help="how many test images")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    a = p.parse_args(argv)
    if a.images < 1:
        p.error("--images must be >= 1")
    return a


@cli.cli_main
def main(argv=None) -> int:
    from detection.engine.checkpointer import Checkpointer
    from detection.modeling import build_detection_model

    a = parse_args(argv)
    cfg = load_config(a.config, a.opts, exit_on_error=True)
    ckpt = a.ckpt or os.path.join(cfg.WORKSPACE, "final", "model_final.pth")
    if not os.path.isfile(ckpt):
        raise cli.MissingInputError(f"--ckpt {ckpt}: no such file")
    model = build_detection_model(cfg)
    Checkpointer(model).load(ckpt)
    name, loader = next(iter(build_test_loaders(cfg, False)))
    stats, seen = None, 0
    for images, _, _ in loader:
        batch = offset_stats(model, images)
        n = len(images.tensors)
        stats = batch if stats is None else [
            {k: (v * seen + b[k] * n) / (seen + n) if k != "layer" else v for k, v in s.items()}
            for s, b in zip(stats, batch)
        ]  # fmt: skip
        seen += n
        if seen >= a.images:
            break
    print(f"{ckpt} on {seen} images of {name}")
    print("| layer | mean abs offset (px) | p99 abs offset (px) | mean modulation |")
    print("|---|---|---|---|")
    for s in stats or []:
        print(f"| {s['layer']} | {s['abs_mean']:.3f} | {s['abs_p99']:.3f} | {s['mask_mean']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
