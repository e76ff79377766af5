"""`torch.compile` of the inference model and of the training step: graph breaks counted by
`torch._dynamo.explain` (tests/deploy/test_compile.py keeps the count from growing; the
remaining breaks and their reasons are in docs/deployment.md), the two callables compiled for
benchmarks/bench_deploy.py, and `compile_inference`, the way to compile the detector for
inference (Inductor's options below).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def inference_fn(model: nn.Module) -> Callable:
    """`fn(images: ImageList) -> list[BoxList]`, the model in eval mode without autograd."""
    model.eval()

    def infer(images):
        with torch.no_grad():
            return model(images)

    return infer


def training_step_fn(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    """`fn(images, targets) -> loss`: forward in train mode, the summed loss, backward and one
    optimizer step, as the training loop does for one iteration (no hooks, no AMP)."""
    model.train()

    def step(images, targets):
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# Dynamo settings that keep data-dependent shapes (boolean masks, nonzero, our NMS, whose fake
# kernel gives an unbacked size) and `.item()` in the graph instead of breaking it there: with
# them the inference model is one graph. The training step keeps dynamo's defaults: with scalar
# capture, indexing the polygon lists of the mask targets by a tensor fails (an unbacked index
# into a Python list), and with dynamic output shapes `torch.unique(...).tolist()` in the
# mimicking branch fails (a guard on an unbacked size): both are errors, not breaks.
CAPTURE = {"capture_dynamic_output_shape_ops": True, "capture_scalar_outputs": True}
CAPTURE_TRAINING: dict = {}


# Inductor options for our models. Layout optimisation (on by default on CPU) makes every conv
# take channels-last inputs and weights. The mask head's convs run on the detections, whose
# number is data-dependent (an unbacked size), and for an unbacked shape FakeTensor's conv
# rule gives up on the memory format and answers contiguous (torch 2.13,
# torch/_subclasses/fake_impls.py, `conv`: "best effort channels last detection" is a TODO),
# while the real oneDNN conv returns channels-last: the compiled graph's stride check fails at
# the first call (docs/deployment.md, torch.compile, item 8). With layout optimisation off the
# fake and the real strides agree.
INDUCTOR_OPTIONS = {"layout_optimization": False}


def compile_inference(model: nn.Module, **compile_kwargs) -> Callable:
    """`fn(images: ImageList) -> list[BoxList]`: the model in eval mode under `torch.compile`
    with `INDUCTOR_OPTIONS`, called under `compile_config()` (one graph). Extra keyword
    arguments (e.g. `dynamic=True`) go to `torch.compile`. The first call compiles (minutes on a
    CPU); later calls with new image sizes may recompile."""
    compiled = torch.compile(inference_fn(model), options=INDUCTOR_OPTIONS, **compile_kwargs)

    def run(images):
        with compile_config():
            return compiled(images)

    return run


def compile_config(capture: dict | None = None):
    """A context with the dynamo settings `capture` (`CAPTURE` when None; {} for defaults)."""
    return torch._dynamo.config.patch(**(CAPTURE if capture is None else capture))


def explain(fn: Callable, *args, capture: dict | None = None) -> dict:
    """`torch._dynamo.explain(fn)(*args)` summarised: {"graphs", "breaks", "reasons": [str]}
    (each break's reason with the user frame it happened in, in order), under
    `compile_config(capture)`. Resets dynamo first, so earlier compilations do not hide
    breaks."""
    torch._dynamo.reset()
    with compile_config(capture):
        out = torch._dynamo.explain(fn)(*args)
    reasons = []
    for b in out.break_reasons:
        frame = b.user_stack[-1] if b.user_stack else None
        where = f"{frame.filename.split('detection/')[-1]}:{frame.lineno}" if frame else "?"
        reasons.append(f"{where}: {b.reason.splitlines()[0]}")
    return {"graphs": out.graph_count, "breaks": out.graph_break_count, "reasons": reasons}


def synthetic_batch(cfg, n: int, seed: int = 0):
    """`(ImageList, [BoxList])`: `n` random images of the config's training size, each with
    three bright squares as targets (boxes, labels, polygon masks; sides from an eighth of the
    height, at least 8 px), for the compile checks and benchmarks."""
    from detection.data.synthetic import synthetic_batch as batch

    h = cfg.INPUT.MIN_SIZE_TRAIN[0]
    return batch(cfg, n, seed=seed, min_side=max(h // 8, 8))
