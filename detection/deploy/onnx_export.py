"""Export to ONNX with standard ops only, check the file, run it in onnxruntime.

Needs the `deploy` extra (`pip install --no-build-isolation -e .[deploy]`): onnx, onnxscript,
onnxruntime. `torch.ops.detection.*` become standard ONNX ops through `onnx_ops` (DeformConv,
RoiAlign, NonMaxSuppression); what exports and what does not yet is in docs/deployment.md.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

OPSET = 19  # the first opset with the standard DeformConv


def image_dynamic_shapes(num_inputs: int = 1) -> tuple:
    """`dynamic_shapes` for `forward(image Tensor[N, 3, H, W])`: H and W dynamic, N and C static."""
    dims = {
        2: torch.export.Dim("height", min=32, max=4096),
        3: torch.export.Dim("width", min=32, max=4096),
    }
    return (dims,) * num_inputs


def export_program(module: nn.Module, image: torch.Tensor, dynamic: bool = False):
    """`torch.export.export(module, (image,))`, with H and W dynamic when `dynamic`."""
    shapes = image_dynamic_shapes() if dynamic else None
    return torch.export.export(module, (image,), dynamic_shapes=shapes, strict=False)


def export_onnx(
    module: nn.Module,
    image: torch.Tensor,
    path: str,
    output_names: Sequence[str],
    dynamic: bool = True,
) -> None:
    """Write `module` (`forward(image)`) to the ONNX file `path` at opset `OPSET` through the
    dynamo exporter: torch.export first, then `decompositions` (ops without an ONNX counterpart
    written with standard ops), then our other ops translated by `onnx_ops`; H and W dynamic
    when `dynamic`.
    Raises the exporter's error when an op has no translation."""
    from detection.deploy.decompositions import decompositions
    from detection.deploy.onnx_ops import translation_table

    program = export_program(module, image, dynamic=dynamic)
    program = program.run_decompositions(decompositions())
    onnx_program = torch.onnx.export(
        program,
        (image,),
        dynamo=True,
        opset_version=OPSET,
        input_names=["image"],
        output_names=list(output_names),
        custom_translation_table=translation_table(),
        optimize=True,
    )
    onnx_program.save(path)


def write_metadata(path: str, props: dict[str, str]) -> None:
    """Add `props` to the ONNX file's `metadata_props` (replacing keys it already has)."""
    import onnx

    model = onnx.load(path)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)


def check_onnx(path: str) -> None:
    """`onnx.checker` on the file, with shape inference (raises onnx's ValidationError)."""
    import onnx

    onnx.checker.check_model(onnx.load(path), full_check=True)


def onnx_op_types(path: str) -> list[str]:
    """The sorted distinct op types of the file's main graph (custom domains as `domain::op`)."""
    import onnx

    graph = onnx.load(path).graph
    return sorted({(f"{n.domain}::" if n.domain else "") + n.op_type for n in graph.node})


def run_onnxruntime(path: str, image: np.ndarray, threads: int = 1) -> list[np.ndarray]:
    """The outputs of the ONNX file on `image` (float32 `[N, 3, H, W]`) with onnxruntime's CPU
    provider and `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image.astype(np.float32)})
