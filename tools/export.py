#!/usr/bin/env python
"""Export a trained detector for deployment.

    python tools/export.py --config FILE --ckpt PATH --format onnx --output model.onnx
        [--part backbone|detector] [--static] [KEY VALUE ...]
    python tools/export.py --config FILE --ckpt PATH --format torch-export --output model.pt2

`--format onnx` writes an ONNX file (opset 19) with standard ops only: the deformable convs as
`DeformConv`, RoIAlign as `RoiAlign`, NMS as `NonMaxSuppression`, modulated deformable RoI
pooling as bilinear gathers. It then runs `onnx.checker` and compares onnxruntime (CPU) with
PyTorch on a random image of the test size, printing the largest difference per output.
`--format torch-export` saves `torch.export.export` of the same module (`torch.export.load`).
`--part detector` (default) exports the whole inference path of one image (image -> boxes,
scores, labels, 28x28 masks to paste on the host); its input is `[1, 3, H, W]`, normalised as
`Predictor.preprocess` makes it, not padded (the graph pads to DATALOADER.SIZE_DIVISIBILITY), and
the ONNX file carries the test-time resize, normalisation, thresholds and class names in its
metadata, for `tools/infer.py --backend onnxruntime` and `tools/test.py --backend onnxruntime`.
`--part backbone` exports the backbone alone (image -> C4, C5). H and W are dynamic (32-4096)
unless --static fixes them to the example's (the test size, MIN_SIZE_TEST x 1.5). The ONNX
comparison runs on the example and, when dynamic, on an image of another size.
The ONNX parts need the deploy extra: `pip install --no-build-isolation -e .[deploy]`.
Bad arguments or files: exit 2 with one `error:` line.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree first

import detection  # noqa: E402, F401  (first: its OpenMP defaults must precede torch)

# isort: split

import torch

from detection.engine.checkpoint_paths import resolve_checkpoint
from detection.engine.checkpointer import Checkpointer
from detection.engine.setup import load_config
from detection.utils import cli

FORMATS = ("onnx", "torch-export")
PARTS = ("detector", "backbone")


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--ckpt", required=True, help="checkpoint or state dict")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--part", default="detector", choices=PARTS, help="what to export")
    parser.add_argument("--static", action="store_true", help="fix H and W to the example's")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config"
    )
    return parser.parse_args(argv)


def _require_deploy_extra() -> None:
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise cli.UsageError(
            f"--format onnx needs {', '.join(missing)}: "
            "pip install --no-build-isolation -e .[deploy]"
        )


def example_image(cfg) -> torch.Tensor:
    """A random normalised `[1, 3, H, W]` image of the test size (MIN_SIZE_TEST x
    MAX_SIZE_TEST capped), padded to SIZE_DIVISIBILITY."""
    h = cfg.INPUT.MIN_SIZE_TEST
    w = min(cfg.INPUT.MAX_SIZE_TEST, round(h * 1.5))
    d = cfg.DATALOADER.SIZE_DIVISIBILITY
    if d > 0:
        h, w = -(-h // d) * d, -(-w // d) * d
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, h, w, generator=g) * 50.0


def build_module(cfg, ckpt: str, part: str) -> torch.nn.Module:
    from detection.deploy.export_model import BackboneForExport, DetectorForExport
    from detection.modeling import build_detection_model

    model = build_detection_model(cfg)
    Checkpointer(model).load(resolve_checkpoint(ckpt, "--ckpt"))
    model.eval()
    if part == "backbone":
        return BackboneForExport(model)
    return DetectorForExport(model, size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY)


def output_names(part: str) -> list[str]:
    return ["C4", "C5"] if part == "backbone" else ["boxes", "scores", "labels", "masks"]


def run_export(cfg, args: argparse.Namespace) -> None:
    from detection.deploy import onnx_export

    if args.format == "onnx":
        _require_deploy_extra()
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise cli.MissingInputError(f"--output: folder {folder} does not exist")
    module = build_module(cfg, args.ckpt, args.part)
    image = example_image(cfg)
    dynamic = not args.static
    if args.format == "torch-export":
        program = onnx_export.export_program(module, image, dynamic=dynamic)
        torch.export.save(program, args.output)
        print(f"wrote {args.output} (torch.export, {args.part})")
        return
    onnx_export.export_onnx(module, image, args.output, output_names(args.part), dynamic=dynamic)
    if args.part == "detector":
        from detection.deploy.runtime import export_metadata
        from tools.infer import category_info

        onnx_export.write_metadata(args.output, export_metadata(cfg, *category_info(cfg)))
    onnx_export.check_onnx(args.output)
    size = "dynamic H, W" if dynamic else f"static {tuple(image.shape)}"
    print(
        f"wrote {args.output} (ONNX opset {onnx_export.OPSET}, {args.part}, {size}); "
        "onnx.checker passed"
    )
    print("ops: " + " ".join(onnx_export.onnx_op_types(args.output)))
    images = [image]
    if dynamic:  # another size than the example's, not a multiple of SIZE_DIVISIBILITY
        g = torch.Generator().manual_seed(1)
        images.append(torch.randn(1, 3, image.shape[2] - 5, image.shape[3] - 27, generator=g) * 50)
    for x in images:
        with torch.no_grad():
            expected = module(x)
        got = onnx_export.run_onnxruntime(args.output, x.numpy())
        for name, e, g in zip(output_names(args.part), expected, got):
            what = f"image {tuple(x.shape[2:])}: onnxruntime vs PyTorch {name} {tuple(g.shape)}"
            if tuple(e.shape) != g.shape:
                print(f"{what}: PyTorch's shape is {tuple(e.shape)}")
                continue
            diff = (e.float() - torch.from_numpy(g).float()).abs().max().item() if e.numel() else 0
            print(f"{what}: max abs difference {diff:.3g}")


@cli.cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.opts, exit_on_error=True)
    run_export(cfg, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
