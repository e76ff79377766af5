// detection::modulated_deform_roi_pool and its backward, CPU (float32, float64).
// Semantics (CONVENTIONS.md): RoIAlign with aligned=True whose bins are shifted by
// (gamma * roi_w * offset[r, 0], gamma * roi_h * offset[r, 1]) and multiplied by mask[r, 0].
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "roi_common/roi_checks.h"
#include "roi_common/roi_pool_cpu.h"

namespace detection {
namespace {

at::Tensor deform_roi_pool_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                       const c10::optional<at::Tensor>& offset,
                                       const c10::optional<at::Tensor>& mask, int64_t pooled_height,
                                       int64_t pooled_width, double spatial_scale,
                                       int64_t sampling_ratio, double gamma) {
  const char* op = "modulated_deform_roi_pool";
  roi::check_deform_args(input, rois, offset, mask, pooled_height, pooled_width, sampling_ratio,
                         op);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  auto output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (num_rois == 0 || input.numel() == 0) return output.zero_();
  const auto input_cl = roi::channels_last(input);
  const auto rois_c = roi::rois_for_kernel(rois, input);
  const auto* off = roi::defined_or_null(offset);
  const auto* msk = roi::defined_or_null(mask);
  const auto off_c = off ? off->contiguous() : at::Tensor();
  const auto msk_c = msk ? msk->contiguous() : at::Tensor();
  const roi::PoolArgs args{pooled_height, pooled_width, spatial_scale, sampling_ratio, true, gamma};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_roi_pool_forward_cpu", [&] {
    roi::roi_pool_forward_cpu<scalar_t>(
        input_cl.const_data_ptr<scalar_t>(), rois_c.const_data_ptr<scalar_t>(),
        off ? off_c.const_data_ptr<scalar_t>() : nullptr,
        msk ? msk_c.const_data_ptr<scalar_t>() : nullptr, output.mutable_data_ptr<scalar_t>(),
        num_rois, channels, static_cast<int>(input.size(2)), static_cast<int>(input.size(3)), args);
  });
  return output;
}

// grad_offset / grad_mask have offset's / mask's shape, or shape [0] when that input is None.
std::tuple<at::Tensor, at::Tensor, at::Tensor> deform_roi_pool_backward_cpu(
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
  const auto* off = roi::defined_or_null(offset);
  const auto* msk = roi::defined_or_null(mask);
  // grad_offset and grad_mask: every element is written below, unless there is nothing to pool
  auto grad_offset =
      off ? at::empty_like(*off, at::MemoryFormat::Contiguous) : at::zeros({0}, input.options());
  auto grad_mask =
      msk ? at::empty_like(*msk, at::MemoryFormat::Contiguous) : at::zeros({0}, input.options());
  if (num_rois == 0 || input.numel() == 0) {
    return {at::zeros_like(input, at::MemoryFormat::Contiguous), grad_offset.zero_(),
            grad_mask.zero_()};
  }
  // channels-last operands of the kernels (roi_pool_cpu.h)
  const auto grad_cl = roi::bins_last(grad);
  const auto input_cl = (off || msk) ? roi::channels_last(input) : at::Tensor();
  auto grad_input_cl =
      at::zeros({input.size(0), input.size(2), input.size(3), channels}, input.options());
  const auto rois_c = roi::rois_for_kernel(rois, input);
  const auto off_c = off ? off->contiguous() : at::Tensor();
  const auto msk_c = msk ? msk->contiguous() : at::Tensor();
  const roi::PoolArgs args{pooled_height, pooled_width, spatial_scale, sampling_ratio, true, gamma};
  const int height = static_cast<int>(input.size(2)), width = static_cast<int>(input.size(3));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_roi_pool_backward_cpu", [&] {
    const scalar_t* off_p = off ? off_c.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* msk_p = msk ? msk_c.const_data_ptr<scalar_t>() : nullptr;
    // one table per RoI, shared by both passes (with the derivatives' coefficients only when
    // the offset/mask pass runs)
    const auto tables = roi::build_tables<scalar_t>(rois_c.const_data_ptr<scalar_t>(), off_p,
                                                    num_rois, height, width, args, off || msk);
    roi::roi_pool_backward_input_cpu<scalar_t>(grad_cl.const_data_ptr<scalar_t>(), tables, msk_p,
                                               grad_input_cl.mutable_data_ptr<scalar_t>(), channels,
                                               height, width, args);
    if (off || msk) {
      roi::roi_pool_backward_offset_mask_cpu<scalar_t>(
          grad_cl.const_data_ptr<scalar_t>(), input_cl.const_data_ptr<scalar_t>(), tables, msk_p,
          off ? grad_offset.mutable_data_ptr<scalar_t>() : nullptr,
          msk ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr, channels, height, width, args);
    }
  });
  return {layout::nhwc_to_nchw(grad_input_cl), grad_offset, grad_mask};
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("modulated_deform_roi_pool", &detection::deform_roi_pool_forward_cpu);
  m.impl("_modulated_deform_roi_pool_backward", &detection::deform_roi_pool_backward_cpu);
}
