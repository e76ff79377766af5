"""The exported ONNX file read by OpenVINO, with `DeformConv` mapped to OpenVINO's
`DeformableConvolution` (opset 8) by an ONNX-frontend conversion extension: OpenVINO's ONNX
reader has no rule for `DeformConv` (docs/deployment.md, "OpenVINO").

The mapping keeps the convention shared by our op, ONNX `DeformConv` and `DeformableConvolution`
(offsets as [dy, dx] pairs per kernel point, deformable groups outermost, the mask multiplying
each sample); `bilinear_interpolation_pad=True` makes samples within one pixel outside the image
interpolate the zero-padded input, as ours do (False would drop them). ONNX's optional bias is
added after the convolution. Needs the `deploy` extra (openvino).
"""

from __future__ import annotations

import numpy as np


def _present(node, index: int) -> bool:
    """Whether optional input `index` of the ONNX node is given (an omitted one is an empty
    name, which OpenVINO's ONNX frontend shows as a NullNode)."""
    if node.get_input_size() <= index:
        return False
    return node.get_input(index).get_node().get_type_name() != "NullNode"


def deform_conv(node) -> list:
    """ONNX `DeformConv` (opset 19: X, W, offset, [B], [mask]) -> `DeformableConvolution` v8."""
    import openvino.opset8 as ops

    x, w, offset = (node.get_input(i) for i in range(3))
    kernel = len(node.get_attribute("kernel_shape", [0, 0]))
    spatial = 2 if kernel == 0 else kernel
    pads = list(node.get_attribute("pads", [0] * 2 * spatial))
    out = ops.deformable_convolution(
        x,
        offset,
        w,
        strides=list(node.get_attribute("strides", [1] * spatial)),
        pads_begin=pads[:spatial],
        pads_end=pads[spatial:],
        dilations=list(node.get_attribute("dilations", [1] * spatial)),
        mask=node.get_input(4) if _present(node, 4) else None,
        group=int(node.get_attribute("group", 1)),
        deformable_group=int(node.get_attribute("offset_group", 1)),
        bilinear_interpolation_pad=True,
    )
    if _present(node, 3):
        bias = ops.reshape(node.get_input(3), np.array([1, -1, 1, 1], np.int64), False)
        out = ops.add(out, bias)
    return [out.output(0)]


def read_model(path: str):
    """`openvino.Model` of the ONNX file, `DeformConv` mapped by `deform_conv`."""
    import openvino as ov
    from openvino.frontend.onnx import ConversionExtension

    core = ov.Core()
    core.add_extension(ConversionExtension("DeformConv", deform_conv))
    return core, core.read_model(path)


def compile_model(path: str, threads: int = 1):
    """The ONNX file compiled for OpenVINO's CPU plugin in float32 (no bf16/f16 inference
    precision), `threads` inference threads: a `CompiledModel` (call it with the inputs)."""
    core, model = read_model(path)
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads)}
    return core.compile_model(model, "CPU", config)


def run_openvino(path_or_compiled, image: np.ndarray, threads: int = 1) -> list[np.ndarray]:
    """The outputs of the file (or of an already compiled model) on `image` (float32)."""
    compiled = (
        compile_model(path_or_compiled, threads)
        if isinstance(path_or_compiled, str)
        else path_or_compiled
    )
    result = compiled(np.ascontiguousarray(image, np.float32))
    return [result[o] for o in compiled.outputs]
