// detection::modulated_deform_roi_pool and its backward, CUDA (float32, float64, float16,
// bfloat16; accumulation in float for the half types). Semantics as the CPU kernel.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>

#include "common/cuda_compat.cuh"
#include "roi_common/roi_checks.h"
#include "roi_common/roi_pool_cuda.cuh"

namespace detection {
namespace {

at::Tensor deform_roi_pool_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                        const c10::optional<at::Tensor>& offset,
                                        const c10::optional<at::Tensor>& mask,
                                        int64_t pooled_height, int64_t pooled_width,
                                        double spatial_scale, int64_t sampling_ratio,
                                        double gamma) {
  const char* op = "modulated_deform_roi_pool";
  roi::check_deform_args(input, rois, offset, mask, pooled_height, pooled_width, sampling_ratio,
                         op);
  cuda::DeviceGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  auto output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0 || input.numel() == 0) return output;
  const auto input_c = input.contiguous();
  const auto rois_c = roi::rois_for_kernel(rois, input);
  const auto* off = roi::defined_or_null(offset);
  const auto* msk = roi::defined_or_null(mask);
  const auto off_c = off ? off->contiguous() : at::Tensor();
  const auto msk_c = msk ? msk->contiguous() : at::Tensor();
  const roi::CudaPoolArgs args{static_cast<int>(pooled_height), static_cast<int>(pooled_width),
                               static_cast<int>(sampling_ratio), true};
  const int64_t total = output.numel();
  cudaStream_t stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "deform_roi_pool_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        cuda::launch(roi::roi_pool_forward_kernel<scalar_t, acc_t>, roi::blocks_for(total),
                     roi::kThreads, 0, stream, total, input_c.const_data_ptr<scalar_t>(),
                     rois_c.const_data_ptr<acc_t>(),
                     off ? off_c.const_data_ptr<scalar_t>() : nullptr,
                     msk ? msk_c.const_data_ptr<scalar_t>() : nullptr,
                     output.mutable_data_ptr<scalar_t>(), input.size(0), channels,
                     static_cast<int>(input.size(2)), static_cast<int>(input.size(3)),
                     static_cast<acc_t>(spatial_scale), static_cast<acc_t>(gamma), args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> deform_roi_pool_backward_cuda(
    const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
    const c10::optional<at::Tensor>& offset, const c10::optional<at::Tensor>& mask,
    int64_t pooled_height, int64_t pooled_width, double spatial_scale, int64_t sampling_ratio,
    double gamma) {
  const char* op = "_modulated_deform_roi_pool_backward";
  roi::check_deform_args(input, rois, offset, mask, pooled_height, pooled_width, sampling_ratio,
                         op);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must have shape [R, C, pooled_height, pooled_width], got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == input.scalar_type() && grad.device() == input.device(), op,
              ": grad must have input's dtype and device");
  cuda::DeviceGuard device_guard(input.device());
  const auto* off = roi::defined_or_null(offset);
  const auto* msk = roi::defined_or_null(mask);
  const auto acc_type = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_acc = at::zeros(input.sizes(), input.options().dtype(acc_type));
  auto grad_offset =
      off ? at::zeros_like(*off, at::MemoryFormat::Contiguous) : at::zeros({0}, input.options());
  auto grad_mask =
      msk ? at::zeros_like(*msk, at::MemoryFormat::Contiguous) : at::zeros({0}, input.options());
  if (grad.numel() == 0 || input.numel() == 0) {
    return {grad_acc.to(input.scalar_type()), grad_offset, grad_mask};
  }
  const auto grad_c = grad.contiguous();
  const auto input_c = input.contiguous();
  const auto rois_c = roi::rois_for_kernel(rois, input);
  const auto off_c = off ? off->contiguous() : at::Tensor();
  const auto msk_c = msk ? msk->contiguous() : at::Tensor();
  const roi::CudaPoolArgs args{static_cast<int>(pooled_height), static_cast<int>(pooled_width),
                               static_cast<int>(sampling_ratio), true};
  const int height = static_cast<int>(input.size(2)), width = static_cast<int>(input.size(3));
  const int64_t total_bins = num_rois * pooled_height * pooled_width;
  cudaStream_t stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "deform_roi_pool_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* off_p = off ? off_c.const_data_ptr<scalar_t>() : nullptr;
        const scalar_t* msk_p = msk ? msk_c.const_data_ptr<scalar_t>() : nullptr;
        roi::launch_backward_input<scalar_t, acc_t>(
            stream, num_rois, grad_c.const_data_ptr<scalar_t>(), rois_c.const_data_ptr<acc_t>(),
            off_p, msk_p, grad_acc.mutable_data_ptr<acc_t>(), input.size(0), channels, height,
            width, static_cast<acc_t>(spatial_scale), static_cast<acc_t>(gamma), args);
        if (off || msk) {
          cuda::launch(roi::roi_pool_backward_offset_mask_kernel<scalar_t, acc_t>,
                       roi::blocks_for(total_bins), roi::kThreads, 0, stream, total_bins,
                       grad_c.const_data_ptr<scalar_t>(), input_c.const_data_ptr<scalar_t>(),
                       rois_c.const_data_ptr<acc_t>(), off_p, msk_p,
                       off ? grad_offset.mutable_data_ptr<scalar_t>() : nullptr,
                       msk ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr, input.size(0),
                       channels, height, width, static_cast<acc_t>(spatial_scale),
                       static_cast<acc_t>(gamma), args);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  return {grad_acc.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace
}  // namespace detection

DETECTION_CUDA_LIBRARY_IMPL(m) {
  m.impl("modulated_deform_roi_pool", &detection::deform_roi_pool_forward_cuda);
  m.impl("_modulated_deform_roi_pool_backward", &detection::deform_roi_pool_backward_cuda);
}
