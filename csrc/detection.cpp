// The operator library `detection`: every op's schema, in one place.
//
// Kernels register themselves per backend in their own files
// (csrc/<op>/cpu/*.cpp: TORCH_LIBRARY_IMPL(detection, CPU, m),
//  csrc/<op>/cuda/*.cu:  TORCH_LIBRARY_IMPL(detection, CUDA, m)); autograd, fake kernels and
// autocast rules are registered from Python (detection/layers/) once this library has loaded.
// Semantics of every op: ../shared/reference/CONVENTIONS.md, summarised in the Python wrappers.

#include <torch/library.h>

#include <string>

#include "common/cpu_isa.h"

#ifdef WITH_CUDA
#include <cuda.h>
#endif

namespace detection {

// CUDA runtime version the library was compiled with, or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

// Instruction-set variant of the CPU kernels' sampling loops in this process: "avx512", "avx2"
// or "default" (csrc/common/cpu_isa.h).
std::string cpu_isa_in_use() { return cpu_isa_name(cpu_isa()); }

}  // namespace detection

TORCH_LIBRARY(detection, m) {
  m.def("_cuda_version() -> int", &detection::cuda_version);
  m.def("_cpu_isa() -> str", &detection::cpu_isa_in_use);
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
