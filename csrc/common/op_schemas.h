// The schema of every op of `detection`, written once: the product library registers them as
// torch.ops.detection.<op> (csrc/detection.cpp), the test-only CUDA emulation library as
// torch.ops.detection_cuda_emu.<op> (csrc/cuda_emu/runtime.cpp), so both take exactly the same
// arguments. Semantics of every op: docs/CONVENTIONS.md, summarised in the Python
// wrappers.
#pragma once

#include <torch/library.h>

namespace detection {

inline void define_op_schemas(torch::Library& m) {
  // Modulated deformable convolution (DCNv2; DCNv1 when mask is None): CONVENTIONS.md.
  m.def(
      "modulated_deform_conv2d(Tensor input, Tensor offset, Tensor? mask, Tensor weight, "
      "Tensor? bias, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, "
      "int dilation_w, int groups, int deform_groups, int im2col_step) -> Tensor");
  // Returns (grad_input, grad_offset, grad_mask, grad_weight, grad_bias); grad_mask and
  // grad_bias are empty tensors of shape [0] when mask / bias is None.
  m.def(
      "_modulated_deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor offset, "
      "Tensor? mask, Tensor weight, Tensor? bias, int stride_h, int stride_w, int pad_h, "
      "int pad_w, int dilation_h, int dilation_w, int groups, int deform_groups, "
      "int im2col_step) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // RoI ops (csrc/roi_align, csrc/deform_roi_pool, csrc/nms; semantics in detection/layers/).
  m.def(
      "modulated_deform_roi_pool(Tensor input, Tensor rois, Tensor? offset, Tensor? mask, "
      "int pooled_height, int pooled_width, float spatial_scale, int sampling_ratio, "
      "float gamma) -> Tensor");
  m.def(
      "_modulated_deform_roi_pool_backward(Tensor grad, Tensor input, Tensor rois, "
      "Tensor? offset, Tensor? mask, int pooled_height, int pooled_width, float spatial_scale, "
      "int sampling_ratio, float gamma) -> (Tensor grad_input, Tensor grad_offset, "
      "Tensor grad_mask)");
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
}

}  // namespace detection
