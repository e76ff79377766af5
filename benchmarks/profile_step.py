"""Profile of training steps of the shapes demo config on the CPU (``torch.profiler``): the ops
by self CPU time with their call counts, the share of the step inside our ops, and the number of
``aten::copy_`` calls.

The steps are those of the ``model`` section of ``run.py`` (4 synthetic images at the config's
input size, SGD), after one warm-up step; ``--dense`` profiles the dense twin (plain convs and
RoIAlign) instead.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py [--steps 3] [--top 25] [--dense]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import run  # noqa: E402


def profile_steps(steps: int, dense: bool, config: str = run.SHAPES_CONFIG):
    """(key_averages of `steps` profiled training steps, wall ms per step)."""
    from torch.profiler import ProfilerActivity, profile

    from detection.modeling import build_detection_model

    cfg = run._model_cfg(config, dense, "cpu", None)
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images, targets = run._batch(cfg, 4, "cpu")

    def step():
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) * 1e3 / steps
    return prof.key_averages(), wall


def report(ka, steps: int, wall_ms: float, top: int) -> str:
    total = sum(e.self_cpu_time_total for e in ka)
    ours = sum(e.cpu_time_total for e in ka if e.key.startswith("detection::"))
    lines = [
        f"threads {torch.get_num_threads()}, {steps} steps, {wall_ms:.1f} ms per step (wall, "
        f"under the profiler), self CPU total {total / 1e3 / steps:.1f} ms per step",
        f"inside detection::* ops (their GEMMs included): {100 * ours / max(total, 1e-9):.1f} %",
        "",
        "| op | self CPU ms / step | share | calls / step | total CPU ms / step |",
        "|---|---|---|---|---|",
    ]
    for e in sorted(ka, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(
            f"| `{e.key}` | {e.self_cpu_time_total / 1e3 / steps:.2f} | "
            f"{100 * e.self_cpu_time_total / max(total, 1e-9):.1f} % | {e.count / steps:.0f} | "
            f"{e.cpu_time_total / 1e3 / steps:.2f} |"
        )
    copies = sum(e.count for e in ka if e.key == "aten::copy_")
    calls = sum(e.count for e in ka)
    lines += ["", f"aten::copy_ calls per step: {copies / steps:.0f}; all op calls per step: "
              f"{calls / steps:.0f}"]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dense", action="store_true", help="the dense twin instead")
    args = parser.parse_args(argv)
    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    ka, wall = profile_steps(args.steps, args.dense)
    print(report(ka, args.steps, wall, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
