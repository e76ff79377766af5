// detection::roi_align and detection::_roi_align_backward, CUDA (float32, float64, float16,
// bfloat16; accumulation in float for the half types). Semantics as the CPU kernel.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "common/cuda_compat.cuh"
#include "roi_common/roi_checks.h"
#include "roi_common/roi_pool_cuda.cuh"

namespace detection {
namespace {

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                  int64_t sampling_ratio, bool aligned) {
  roi::check_input_and_rois(input, rois, "roi_align");
  roi::check_pooling_args(pooled_height, pooled_width, sampling_ratio, "roi_align");
  cuda::DeviceGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  auto output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0 || input.numel() == 0) return output;
  const auto input_c = input.contiguous();
  const auto rois_c = roi::rois_for_kernel(rois, input);
  const roi::CudaPoolArgs args{static_cast<int>(pooled_height), static_cast<int>(pooled_width),
                               static_cast<int>(sampling_ratio), aligned};
  const int64_t total = output.numel();
  cudaStream_t stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        cuda::launch(roi::roi_pool_forward_kernel<scalar_t, acc_t>, roi::blocks_for(total),
                     roi::kThreads, 0, stream, total, input_c.const_data_ptr<scalar_t>(),
                     rois_c.const_data_ptr<acc_t>(), nullptr, nullptr,
                     output.mutable_data_ptr<scalar_t>(), input.size(0), channels,
                     static_cast<int>(input.size(2)), static_cast<int>(input.size(3)),
                     static_cast<acc_t>(spatial_scale), static_cast<acc_t>(0), args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  const char* op = "_roi_align_backward";
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": batch_size, channels, height and width must be >= 0");
  cuda::DeviceGuard device_guard(grad.device());
  const auto acc_type = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_acc = at::zeros({batch_size, channels, height, width}, grad.options().dtype(acc_type));
  roi::check_input_and_rois(grad_acc, rois, op);
  roi::check_pooling_args(pooled_height, pooled_width, sampling_ratio, op);
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must have shape [R, channels, pooled_height, pooled_width], got ",
              grad.sizes());
  if (grad.numel() == 0 || grad_acc.numel() == 0) return grad_acc.to(grad.scalar_type());
  const auto grad_c = grad.contiguous();
  const auto rois_c = roi::rois_for_kernel(rois, grad);
  const roi::CudaPoolArgs args{static_cast<int>(pooled_height), static_cast<int>(pooled_width),
                               static_cast<int>(sampling_ratio), aligned};
  cudaStream_t stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        roi::launch_backward_input<scalar_t, acc_t>(
            stream, num_rois, grad_c.const_data_ptr<scalar_t>(), rois_c.const_data_ptr<acc_t>(),
            nullptr, nullptr, grad_acc.mutable_data_ptr<acc_t>(), batch_size, channels,
            static_cast<int>(height), static_cast<int>(width), static_cast<acc_t>(spatial_scale),
            static_cast<acc_t>(0), args);
      });
  return grad_acc.to(grad.scalar_type());
}

}  // namespace
}  // namespace detection

DETECTION_CUDA_LIBRARY_IMPL(m) {
  m.impl("roi_align", &detection::roi_align_forward_cuda);
  m.impl("_roi_align_backward", &detection::roi_align_backward_cuda);
}
