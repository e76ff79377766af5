"""Translations of `torch.ops.detection.*` to standard ONNX ops, for the torch.onnx dynamo
exporter's `custom_translation_table` (`TRANSLATIONS`). Needs onnxscript (the `deploy` extra).

- `modulated_deform_conv2d` -> `DeformConv` (opset 19): the same convention as our op (offsets
  as interleaved [dy, dx] pairs per kernel point, deformable groups outermost; mask multiplying
  each sample; samples within one pixel outside the image interpolate the zero-padded input),
  see docs/CONVENTIONS.md. DCNv1 (mask None) leaves DeformConv's optional mask out.
- `roi_align` -> `RoiAlign` (opset 16): `aligned=True` is `coordinate_transformation_mode=
  "half_pixel"`, `aligned=False` (legacy, roi size at least 1) is "output_half_pixel".
- `nms` -> `NonMaxSuppression` with one batch and one class, keeping every box that survives
  (kept indices in decreasing score order, IoU without "+1", as ours).
"""

from __future__ import annotations

from onnxscript import opset19 as op
import torch

_INT64_MAX = 2**63 - 1


def modulated_deform_conv2d(
    input, offset, mask, weight, bias, sh, sw, ph, pw, dh, dw, groups, dg, step
):
    # `step` (im2col_step) bounds memory only; the result does not depend on it.
    return op.DeformConv(
        input,
        weight,
        offset,
        bias,
        mask,
        dilations=[dh, dw],
        group=groups,
        offset_group=dg,
        pads=[ph, pw, ph, pw],
        strides=[sh, sw],
    )


def roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    boxes = op.Slice(rois, [1], [5], [1])
    batch = op.Cast(op.Reshape(op.Slice(rois, [0], [1], [1]), [-1]), to=7)  # INT64
    return op.RoiAlign(
        input,
        boxes,
        batch,
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
        mode="avg",
        output_height=pooled_height,
        output_width=pooled_width,
        sampling_ratio=sampling_ratio,
        spatial_scale=spatial_scale,
    )


def nms(dets, scores, iou_threshold):
    boxes = op.Unsqueeze(dets, [0])  # [1, K, 4]
    per_class = op.Unsqueeze(scores, [0, 1])  # [1, 1, K]
    max_out = op.Constant(value_ints=[_INT64_MAX])
    threshold = op.Constant(value_floats=[iou_threshold])
    selected = op.NonMaxSuppression(boxes, per_class, max_out, threshold)  # [S, 3]
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])


def translation_table() -> dict:
    """`{torch op overload: onnxscript function}` for `torch.onnx.export(custom_translation_table=)`."""
    ops = torch.ops.detection
    return {
        ops.modulated_deform_conv2d.default: modulated_deform_conv2d,
        ops.roi_align.default: roi_align,
        ops.nms.default: nms,
    }
