// Host-side argument checks shared by the RoI ops (CPU and CUDA): every failure names the
// argument. Included by the kernel files only (not by device code).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace detection {
namespace roi {

// input: Tensor[N, C, H, W] floating; rois: Tensor[R, 5] floating (batch_index, x1, y1, x2, y2)
// on input's device, finite, every batch index in [0, N). The finiteness and batch-index checks
// read the values (device synchronisations on CUDA) so that a kernel never indexes outside `input`.
inline void check_input_and_rois(const at::Tensor& input, const at::Tensor& rois, const char* op) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be a 4-D Tensor[N, C, H, W], got ", input.dim(),
              " dimensions");
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op,
              ": input must be a floating point tensor, got ", input.scalar_type());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be a Tensor[R, 5] (batch_index, x1, y1, x2, y2), got shape ",
              rois.sizes());
  TORCH_CHECK(at::isFloatingType(rois.scalar_type()), op,
              ": rois must be a floating point tensor, got ", rois.scalar_type());
  TORCH_CHECK(rois.device() == input.device(), op, ": rois must be on input's device (",
              input.device(), "), got ", rois.device());
  if (rois.size(0) == 0) return;
  // NaN/inf box corners would give undefined float-to-int casts in the sampling grid (a NaN
  // batch index fails the range check below). Both conditions in one reduction, so that valid
  // RoIs cost one host synchronisation on CUDA (one .item()), not two; the checks below, which
  // name what is wrong, run only when it fails.
  const auto finite_rows = at::isfinite(rois.slice(1, 1, 5)).all(1);
  const auto batch_index = rois.select(1, 0);
  const auto in_range_rows = at::logical_and(batch_index >= 0, batch_index < input.size(0));
  if (at::logical_and(finite_rows, in_range_rows).all().item<bool>()) return;
  TORCH_CHECK(finite_rows.all().item<bool>(), op,
              ": rois must be finite (x1, y1, x2, y2 of rois[:, 1:5]); got NaN or inf in ",
              rois.size(0) - finite_rows.sum().item<int64_t>(), " of ", rois.size(0), " rows");
  TORCH_CHECK(in_range_rows.all().item<bool>(), op, ": rois[:, 0] (batch index) must lie in [0, ",
              input.size(0), ") for an input of batch size ", input.size(0), "; got values from ",
              batch_index.min().item<double>(), " to ", batch_index.max().item<double>());
}

inline void check_pooling_args(int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                               const char* op) {
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op,
              ": pooled_height and pooled_width must be positive, got ", pooled_height, " and ",
              pooled_width);
  TORCH_CHECK(sampling_ratio >= 0, op, ": sampling_ratio must be >= 0 (0 = adaptive), got ",
              sampling_ratio);
}

// offset: Tensor[R, 2, ph, pw] or mask: Tensor[R, 1, ph, pw], same dtype/device as input.
inline void check_per_bin(const c10::optional<at::Tensor>& t, const char* name, int64_t channels,
                          const at::Tensor& input, int64_t num_rois, int64_t pooled_height,
                          int64_t pooled_width, const char* op) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->dim() == 4 && t->size(0) == num_rois && t->size(1) == channels &&
                  t->size(2) == pooled_height && t->size(3) == pooled_width,
              op, ": ", name, " must have shape [R, ", channels,
              ", pooled_height, pooled_width] = [", num_rois, ", ", channels, ", ", pooled_height,
              ", ", pooled_width, "], got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == input.scalar_type(), op, ": ", name, " must have input's dtype (",
              input.scalar_type(), "), got ", t->scalar_type());
  TORCH_CHECK(t->device() == input.device(), op, ": ", name, " must be on input's device (",
              input.device(), "), got ", t->device());
}

// rois converted to the accumulation type used by the kernels (float, or double for double
// input), contiguous: coordinates keep full precision for half/bfloat16 features.
inline at::Tensor rois_for_kernel(const at::Tensor& rois, const at::Tensor& input) {
  const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return rois.to(acc).contiguous();
}

// The optional tensor's address, or nullptr when it is absent (None or undefined).
inline const at::Tensor* defined_or_null(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? &*t : nullptr;
}

// Every argument check of modulated_deform_roi_pool and its backward (CPU and CUDA).
inline void check_deform_args(const at::Tensor& input, const at::Tensor& rois,
                              const c10::optional<at::Tensor>& offset,
                              const c10::optional<at::Tensor>& mask, int64_t pooled_height,
                              int64_t pooled_width, int64_t sampling_ratio, const char* op) {
  check_input_and_rois(input, rois, op);
  check_pooling_args(pooled_height, pooled_width, sampling_ratio, op);
  check_per_bin(offset, "offset", 2, input, rois.size(0), pooled_height, pooled_width, op);
  check_per_bin(mask, "mask", 1, input, rois.size(0), pooled_height, pooled_width, op);
}

}  // namespace roi
}  // namespace detection
