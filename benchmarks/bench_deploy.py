"""Deployment benchmarks: every ratio against a baseline measured in the same run.

    python benchmarks/bench_deploy.py op [--threads 1] [--repeat 5]
    python benchmarks/bench_deploy.py compile [--config FILE] [--threads 1] [--repeat 3]
    python benchmarks/bench_deploy.py images --config FILE --ckpt PATH --model model.onnx
        [--images 20] [--threads 1] [--no-compile]

- `op`: the forward of the modulated deformable conv on the ResNet-50 res3-res5 shapes of
  bench_ops.py (3x3, mask given, offsets of a few pixels): ours
  (`detection.layers.modulated_deform_conv2d`), onnxruntime's `DeformConv` (a one-node ONNX
  graph) and OpenVINO's `DeformableConvolution` (opset 8, `bilinear_interpolation_pad`, f32), with
  the largest difference to ours as a check that the three compute the same thing; and the dense
  `F.conv2d` of the same shape, the GEMM that all three run after their sampling, as the floor.
  The runtimes are called in turn, `--repeat` rounds, best of each.
- `compile`: `torch.compile` (inductor) of the inference model and of the training step (forward,
  backward, SGD) on synthetic batches of the config (default: the tiny shapes config), against
  eager in the same process: time per call and the speed-up; the compile time apart.
- `images`: seconds per image of the trained model on the first N images of DATASETS.TEST, each
  alone (batch 1, preprocessed as `Predictor` does, mask pasting not included): PyTorch eager,
  `torch.compile(dynamic=True)`, the exported ONNX file in onnxruntime and in OpenVINO; the
  first call of each (compilation, warm-up) is timed apart.

Each prints a Markdown table with the machine, its load and the command; the tables of a run go
to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Callable

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch's pools)

TINY = os.path.join(ROOT, "configs", "shapes", "e2e_deformconv_mask_rcnn_shapes_tiny.yaml")


def machine() -> str:
    """CPU model, cores, load average and the library versions, one line."""
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}"


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of `fn` over `repeat` calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function over `repeat` rounds that call each once, in turn (after
    one untimed call of each), so that a change of the machine's load mid-run shifts them all."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# op: our deformable conv against onnxruntime's DeformConv and OpenVINO's DeformableConvolution
# ---------------------------------------------------------------------------------------------
def _onnx_deform_conv(shape_args, path: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    n, cin, cout, h, w, k, s, p, d = shape_args
    oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
    ow = (w + 2 * p - d * (k - 1) - 1) // s + 1
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("X", f, [n, cin, h, w]),
        helper.make_tensor_value_info("W", f, [cout, cin, k, k]),
        helper.make_tensor_value_info("offset", f, [n, 2 * k * k, oh, ow]),
        helper.make_tensor_value_info("B", f, [cout]),
        helper.make_tensor_value_info("mask", f, [n, k * k, oh, ow]),
    ]
    node = helper.make_node(
        "DeformConv",
        ["X", "W", "offset", "B", "mask"],
        ["Y"],
        dilations=[d, d],
        pads=[p, p, p, p],
        strides=[s, s],
        group=1,
        offset_group=1,
    )
    out = helper.make_tensor_value_info("Y", f, None)
    graph = helper.make_graph([node], "deform_conv", inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, path)


def _openvino_deform_conv(shape_args, threads: int):
    import openvino as ov
    import openvino.opset8 as ops

    n, cin, cout, h, w, k, s, p, d = shape_args
    oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
    ow = (w + 2 * p - d * (k - 1) - 1) // s + 1
    x = ops.parameter([n, cin, h, w], np.float32)
    wt = ops.parameter([cout, cin, k, k], np.float32)
    off = ops.parameter([n, 2 * k * k, oh, ow], np.float32)
    b = ops.parameter([cout], np.float32)
    m = ops.parameter([n, k * k, oh, ow], np.float32)
    y = ops.deformable_convolution(
        x, off, wt, [s, s], [p, p], [p, p], [d, d], mask=m, bilinear_interpolation_pad=True
    )
    y = ops.add(y, ops.reshape(b, np.array([1, -1, 1, 1], np.int64), False))
    model = ov.Model([y], [x, off, wt, m, b], "deform_conv")
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    return ov.Core().compile_model(model, "CPU", config)


def bench_op(threads: int, repeat: int) -> str:
    import tempfile

    from bench_ops import SHAPES
    import onnxruntime as ort

    from detection.layers import modulated_deform_conv2d

    rows = []
    for name, shape_args in SHAPES.items():
        n, cin, cout, h, w, k, s, p, d = shape_args
        oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
        ow = (w + 2 * p - d * (k - 1) - 1) // s + 1
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, cin, h, w, generator=g)
        weight = torch.randn(cout, cin, k, k, generator=g) * 0.05
        bias = torch.randn(cout, generator=g)
        offset = torch.randn(n, 2 * k * k, oh, ow, generator=g) * 2.0
        mask = torch.rand(n, k * k, oh, ow, generator=g)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "dc.onnx")
            _onnx_deform_conv(shape_args, path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = {
            "X": x.numpy(),
            "W": weight.numpy(),
            "offset": offset.numpy(),
            "B": bias.numpy(),
            "mask": mask.numpy(),
        }
        compiled = _openvino_deform_conv(shape_args, threads)
        ov_in = [x.numpy(), offset.numpy(), weight.numpy(), mask.numpy(), bias.numpy()]
        with torch.no_grad():
            ours = modulated_deform_conv2d(x, offset, mask, weight, bias, s, p, d)
            y_ort = sess.run(None, feeds)[0]
            y_ov = compiled(ov_in)[compiled.outputs[0]]
            t = interleaved_best(
                {
                    "ours": lambda: modulated_deform_conv2d(x, offset, mask, weight, bias, s, p, d),
                    "ort": lambda: sess.run(None, feeds),
                    "ov": lambda: compiled(ov_in),
                    # the dense conv of the same shape: the GEMM every im2col method runs
                    "conv": lambda: torch.nn.functional.conv2d(x, weight, bias, s, p, d),
                },
                repeat,
            )
        t_ours, t_ort, t_ov, t_conv = t["ours"], t["ort"], t["ov"], t["conv"]
        ref = ours.numpy()
        rows.append(
            [
                f"{name} {tuple(shape_args[:5])}",
                f"{t_ours * 1e3:.1f}",
                f"{t_ort * 1e3:.1f} ({t_ort / t_ours:.2f}x)",
                f"{t_ov * 1e3:.1f} ({t_ov / t_ours:.2f}x)",
                f"{t_conv * 1e3:.1f} ({t_ours / t_conv:.2f}x / {t_ort / t_conv:.2f}x)",
                f"{np.abs(y_ort - ref).max():.1e} / {np.abs(y_ov - ref).max():.1e}",
            ]
        )
        print(rows[-1], flush=True)
    header = [
        "shape (N, Cin, Cout, H, W)",
        "ours ms",
        "onnxruntime DeformConv ms (x ours)",
        "OpenVINO DeformableConvolution ms (x ours)",
        "dense `F.conv2d` ms (ours / ort in units of it)",
        "max abs diff to ours (ort / ov)",
    ]
    return table(header, rows)


# ---------------------------------------------------------------------------------------------
# compile: torch.compile of inference and of the training step against eager
# ---------------------------------------------------------------------------------------------
def bench_compile(config: str, repeat: int, n_images: int) -> str:
    from detection.config import load_config
    from detection.deploy.compile_check import (
        CAPTURE,
        CAPTURE_TRAINING,
        INDUCTOR_OPTIONS,
        compile_config,
        inference_fn,
        synthetic_batch,
        training_step_fn,
    )
    from detection.modeling import build_detection_model

    cfg = load_config(config, ["MODEL.DEVICE", "cpu"], world_size=1)
    images, targets = synthetic_batch(cfg, n_images)
    rows = []
    for what in ("inference", "training step"):
        torch.manual_seed(0)
        model = build_detection_model(cfg)
        if what == "inference":
            fn, args, capture = inference_fn(model), (images,), CAPTURE
        else:
            opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
            fn, args, capture = training_step_fn(model, opt), (images, targets), CAPTURE_TRAINING
        eager = best_seconds(lambda: fn(*args), repeat)
        torch._dynamo.reset()
        compiled = torch.compile(fn, options=INDUCTOR_OPTIONS)
        with compile_config(capture):
            start = time.perf_counter()
            compiled(*args)
            first = time.perf_counter() - start
            t = best_seconds(lambda: compiled(*args), repeat)
        rows.append(
            [what, f"{eager * 1e3:.0f}", f"{t * 1e3:.0f}", f"{eager / t:.2f}x", f"{first:.0f} s"]
        )
        print(rows[-1], flush=True)
    header = ["", "eager ms", "compiled ms", "speed-up", "first compiled call"]
    return f"{os.path.basename(config)}, {n_images} images per call\n\n" + table(header, rows)


# ---------------------------------------------------------------------------------------------
# images: seconds per image of the trained model in each runtime
# ---------------------------------------------------------------------------------------------
def bench_images(
    config: str, ckpt: str, onnx_path: str, n_images: int, threads: int, compile_: bool
) -> str:
    import cv2

    from detection.data.transforms import build_transforms
    from detection.deploy.runtime import OnnxRuntimeDetector, OpenVinoDetector
    from detection.engine.checkpoint_paths import resolve_checkpoint
    from detection.engine.checkpointer import Checkpointer
    from detection.engine.setup import load_config
    from detection.modeling import build_detection_model
    from detection.structures.image_list import to_image_list
    from tools.onnx_parity import dataset_images

    cfg = load_config(config, ["MODEL.DEVICE", "cpu"])
    model = build_detection_model(cfg).eval()
    Checkpointer(model).load(resolve_checkpoint(ckpt, "--ckpt"))
    transform = build_transforms(cfg, is_train=False)
    d = cfg.DATALOADER.SIZE_DIVISIBILITY
    tensors = [transform(cv2.imread(p), None)[0] for p in dataset_images(cfg)[:n_images]]
    padded = [to_image_list([t], d) for t in tensors]  # what the PyTorch model takes
    arrays = [t[None].numpy() for t in tensors]  # what the exported graph takes (it pads)

    def eager(i):
        with torch.no_grad():
            return model(padded[i])

    from detection.deploy.compile_check import compile_inference

    compiled_model = compile_inference(model, dynamic=True) if compile_ else None

    def compiled(i):
        return compiled_model(padded[i])

    ort_model = OnnxRuntimeDetector(onnx_path, threads)
    ov_model = OpenVinoDetector(onnx_path, threads)
    runners = {  # the compiled model last: its first call compiles for minutes
        "PyTorch eager": eager,
        "onnxruntime": lambda i: ort_model.run(arrays[i]),
        "OpenVINO": lambda i: ov_model.run(arrays[i]),
        "PyTorch torch.compile(dynamic=True)": compiled if compile_ else None,
    }
    rows, base = [], None
    for name, run in runners.items():
        if run is None:
            continue
        start = time.perf_counter()
        run(0)  # first call: compilation / warm-up
        first = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(len(arrays)):
            run(i)
        per_image = (time.perf_counter() - start) / len(arrays)
        base = base or per_image
        rows.append([name, f"{per_image:.3f}", f"{base / per_image:.2f}x", f"{first:.1f} s"])
        print(rows[-1], flush=True)
    header = ["runtime", "s / image", "speed-up over eager", "first call"]
    return (
        f"{os.path.basename(config)}, {len(arrays)} images of {cfg.DATASETS.TEST[0]}, batch 1, "
        f"{threads} thread(s)\n\n" + table(header, rows)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("section", choices=("op", "compile", "images"))
    parser.add_argument("--threads", type=int, default=1, help="threads of every runtime")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls (best) for op/compile")
    parser.add_argument("--config", default=TINY, help="compile: config; images: the model's")
    parser.add_argument("--ckpt", help="images: the trained model")
    parser.add_argument("--model", help="images: its ONNX file (tools/export.py)")
    parser.add_argument("--images", type=int, default=20, help="images: how many")
    parser.add_argument("--batch", type=int, default=2, help="compile: images per call")
    parser.add_argument("--no-compile", action="store_true", help="images: skip torch.compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_deploy.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    print(f"$ {command}\n{machine()}; {args.threads} thread(s)", flush=True)
    if args.section == "op":
        text = bench_op(args.threads, args.repeat)
    elif args.section == "compile":
        text = bench_compile(args.config, args.repeat, args.batch)
    else:
        if not (args.ckpt and args.model):
            parser.error("images needs --ckpt and --model")
        text = bench_images(
            args.config, args.ckpt, args.model, args.images, args.threads, not args.no_compile
        )
    print()
    print(text)
    print(f"\n(load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
