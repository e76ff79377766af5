"""Profile of training steps of the shapes demo config (``torch.profiler``): the ops by self CPU
time with their call counts, the share of the step inside our ops, the number of ``aten::copy_``
calls, and the torch calls the step makes from Python, by the function of the package that makes
them.

On the GPU (``--device cuda``) it also tells whether the step is bound by the host: the kernels'
time against the step's wall time, the kernel launches, and the synchronisations with the host
(``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, ``cudaEventSynchronize``) and memory
copies per step, with the kernels by GPU time. The CPU table then reads as the host's side of
the step: the time to issue each op, not to compute it.

The steps are those of the ``model`` section of ``run.py`` (``--images`` synthetic images at the
config's input size, SGD), after one warm-up step; ``--dense`` profiles the dense twin (plain
convs and RoIAlign) instead.

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py [--steps 3] [--top 25] [--dense]
    python benchmarks/profile_step.py --device cuda [--config CONFIG] [--images 4]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import traceback

import torch
from torch.overrides import TorchFunctionMode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import run  # noqa: E402

PACKAGE = os.path.join(ROOT, "detection") + os.sep
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


class PythonCalls(TorchFunctionMode):
    """Counts the torch calls made from Python on this thread (functions, tensor methods and
    attribute reads that go through ``__torch_function__``), by the innermost function of the
    package on the stack (``file.py:function``; ``(outside the package)`` for the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        where = "(outside the package)"
        for frame in reversed(traceback.extract_stack(limit=64)[:-1]):
            if frame.filename.startswith(PACKAGE):
                where = f"{os.path.relpath(frame.filename, ROOT)}:{frame.name}"
                break
        self.calls[where] += 1
        return func(*args, **(kwargs or {}))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def profile_steps(
    steps: int,
    dense: bool,
    config: str = run.SHAPES_CONFIG,
    device: str = "cpu",
    images: int = 4,
):
    """(key_averages of `steps` profiled training steps, wall ms per step, the Python-level torch
    calls of one more step by where they come from)."""
    from torch.profiler import ProfilerActivity, profile

    from detection.modeling import build_detection_model

    cfg = run._model_cfg(config, dense, device, None)
    torch.manual_seed(0)
    model = build_detection_model(cfg).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    batch, targets = run._batch(cfg, images, device)

    def step():
        losses = model(batch, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    step()
    _sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)  # one synchronisation of our own: report() leaves it out
        wall = (time.perf_counter() - start) * 1e3 / steps
    calls = PythonCalls()
    with calls:
        step()
    _sync(device)
    return prof.key_averages(), wall, calls.calls


def _count(ka, names) -> int:
    return sum(e.count for e in ka if e.key in names)


def _gpu_lines(ka, steps: int, wall_ms: float, top: int) -> list[str]:
    """The GPU side of the step: kernels' time against the wall, launches, syncs and copies."""
    kernels = [e for e in ka if e.device_type != torch.autograd.DeviceType.CPU]
    gpu_ms = run.gpu_time(ka) / 1e3 / steps
    ours = run._our_gpu_time(ka) / 1e3 / steps
    launches = sum(e.count for e in ka if e.key.startswith(("cudaLaunch", "cuLaunch")))
    syncs = _count(ka, SYNC_CALLS) - 1  # less the one after the profiled steps
    copies = sum(e.count for e in ka if e.key.startswith("cudaMemcpy"))
    lines = [
        f"GPU: kernels and copies {gpu_ms:.1f} ms per step, "
        f"{100 * gpu_ms / max(wall_ms, 1e-9):.0f} % of the wall time (the rest: the GPU waits for "
        f"the host); in our ops (their GEMMs included) {ours:.1f} ms; {launches / steps:.0f} "
        f"kernel launches, {syncs / steps:.1f} host synchronisations and {copies / steps:.1f} "
        "cudaMemcpy calls per step",
        "",
        "| kernel or copy | GPU ms / step | calls / step |",
        "|---|---|---|",
    ]
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]:
        lines.append(
            f"| `{e.key[:80]}` | {e.self_device_time_total / 1e3 / steps:.2f} | "
            f"{e.count / steps:.0f} |"
        )
    return lines + [""]


def report(ka, steps: int, wall_ms: float, top: int, calls=None, device: str = "cpu") -> str:
    cpu = [e for e in ka if e.device_type == torch.autograd.DeviceType.CPU]
    total = sum(e.self_cpu_time_total for e in cpu)
    ours = sum(e.cpu_time_total for e in cpu if e.key.startswith("detection::"))
    lines = [
        f"{device}, threads {torch.get_num_threads()}, {steps} steps, {wall_ms:.1f} ms per step "
        f"(wall, under the profiler), self CPU total {total / 1e3 / steps:.1f} ms per step",
        f"inside detection::* ops (their GEMMs included): {100 * ours / max(total, 1e-9):.1f} %",
        "",
    ]
    if device == "cuda":
        lines += _gpu_lines(ka, steps, wall_ms, min(top, 15))
    lines += [
        "| op | self CPU ms / step | share | calls / step | total CPU ms / step |",
        "|---|---|---|---|---|",
    ]
    for e in sorted(cpu, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(
            f"| `{e.key}` | {e.self_cpu_time_total / 1e3 / steps:.2f} | "
            f"{100 * e.self_cpu_time_total / max(total, 1e-9):.1f} % | {e.count / steps:.0f} | "
            f"{e.cpu_time_total / 1e3 / steps:.2f} |"
        )
    copies = _count(cpu, ("aten::copy_",))
    n_ops = sum(e.count for e in cpu if e.key.startswith("aten::"))
    lines += ["", f"aten::copy_ calls per step: {copies / steps:.0f}; aten op calls per step: "
              f"{n_ops / steps:.0f}"]  # fmt: skip
    if calls:
        lines += [
            "",
            f"torch calls from Python in one step (this thread): {sum(calls.values())}",
            "",
            "| where | calls |",
            "|---|---|",
        ]
        lines += [f"| `{where}` | {n} |" for where, n in calls.most_common(top)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dense", action="store_true", help="the dense twin instead")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--config", default=run.SHAPES_CONFIG, help="a model config (YAML)")
    parser.add_argument("--images", type=int, default=4, help="images per step")
    args = parser.parse_args(argv)
    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    if args.images < 1:
        print("error: --images must be at least 1", file=sys.stderr)
        return 2
    if not os.path.isfile(args.config):
        print(f"error: --config {args.config}: no such file", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is visible", file=sys.stderr)
        return 2
    ka, wall, calls = profile_steps(args.steps, args.dense, args.config, args.device, args.images)
    print(report(ka, args.steps, wall, args.top, calls, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
