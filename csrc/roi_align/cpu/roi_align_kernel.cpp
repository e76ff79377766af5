// detection::roi_align and detection::_roi_align_backward, CPU (float32, float64).
// Semantics: csrc/roi_common/roi_sampling.h; aligned=True is detectron2's half-pixel-shifted box,
// aligned=False the legacy box (no shift, size at least 1), as torchvision.ops.roi_align.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "roi_common/roi_checks.h"
#include "roi_common/roi_pool_cpu.h"

namespace detection {
namespace {

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                 double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                 int64_t sampling_ratio, bool aligned) {
  roi::check_input_and_rois(input, rois, "roi_align");
  roi::check_pooling_args(pooled_height, pooled_width, sampling_ratio, "roi_align");
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  auto output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (num_rois == 0 || input.numel() == 0) return output.zero_();
  const auto input_cl = roi::channels_last(input);
  const auto rois_c = roi::rois_for_kernel(rois, input);
  const roi::PoolArgs args{pooled_height,  pooled_width, spatial_scale,
                           sampling_ratio, aligned,      0.0};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    roi::roi_pool_forward_cpu<scalar_t>(
        input_cl.const_data_ptr<scalar_t>(), rois_c.const_data_ptr<scalar_t>(), nullptr, nullptr,
        output.mutable_data_ptr<scalar_t>(), num_rois, channels, static_cast<int>(input.size(2)),
        static_cast<int>(input.size(3)), args);
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                  int64_t batch_size, int64_t channels, int64_t height,
                                  int64_t width, int64_t sampling_ratio, bool aligned) {
  const char* op = "_roi_align_backward";
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0, op,
              ": batch_size, channels, height and width must be >= 0");
  // accumulated channels-last (roi_pool_cpu.h); its NCHW view for the checks
  auto grad_input_cl = at::zeros({batch_size, height, width, channels}, grad.options());
  const auto grad_input = grad_input_cl.permute({0, 3, 1, 2});
  roi::check_input_and_rois(grad_input, rois, op);
  roi::check_pooling_args(pooled_height, pooled_width, sampling_ratio, op);
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              op, ": grad must have shape [R, channels, pooled_height, pooled_width], got ",
              grad.sizes());
  if (num_rois == 0 || grad_input.numel() == 0) return grad_input.contiguous();
  const auto grad_cl = roi::bins_last(grad);
  const auto rois_c = roi::rois_for_kernel(rois, grad_input);
  const roi::PoolArgs args{pooled_height,  pooled_width, spatial_scale,
                           sampling_ratio, aligned,      0.0};
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    const auto tables =
        roi::build_tables<scalar_t>(rois_c.const_data_ptr<scalar_t>(), nullptr, num_rois,
                                    static_cast<int>(height), static_cast<int>(width), args, false);
    roi::roi_pool_backward_input_cpu<scalar_t>(grad_cl.const_data_ptr<scalar_t>(), tables, nullptr,
                                               grad_input_cl.mutable_data_ptr<scalar_t>(), channels,
                                               static_cast<int>(height), static_cast<int>(width),
                                               args);
  });
  return layout::nhwc_to_nchw(grad_input_cl);
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("roi_align", &detection::roi_align_forward_cpu);
  m.impl("_roi_align_backward", &detection::roi_align_backward_cpu);
}
