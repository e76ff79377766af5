// detection::nms, CPU (float32, float64): greedy non-maximum suppression.
// dets: Tensor[K, 4] (x1, y1, x2, y2), continuous coordinates (area = (x2 - x1) * (y2 - y1), no
// +1); a box is dropped when its IoU (nms_math.h, shared with the CUDA kernel) with a kept,
// higher-scored box is > iou_threshold. Returns the kept indices (int64) by decreasing score;
// equal scores keep their input order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "nms/nms_checks.h"
#include "nms/nms_math.h"

namespace detection {

namespace {

template <typename scalar_t>
void nms_cpu_impl(const scalar_t* d, const int64_t* order, int64_t n, double iou_threshold,
                  std::vector<int64_t>& keep) {
  // boxes in score order, one contiguous array per coordinate
  std::vector<scalar_t> x1(n), y1(n), x2(n), y2(n), areas(n);
  for (int64_t o = 0; o < n; ++o) {
    const scalar_t* b = d + order[o] * 4;
    x1[o] = b[0];
    y1[o] = b[1];
    x2[o] = b[2];
    y2[o] = b[3];
    areas[o] = nms::box_area(b[0], b[1], b[2], b[3]);
  }
  std::vector<char> suppressed(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(order[i]);
    const scalar_t ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = areas[i];
    for (int64_t j = i + 1; j < n; ++j) {
      if (suppressed[j]) continue;
      const scalar_t iou =
          nms::iou(ix1, iy1, ix2, iy2, iarea, x1[j], y1[j], x2[j], y2[j], areas[j]);
      if (iou > iou_threshold) suppressed[j] = 1;
    }
  }
}

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  nms_check_args(dets, scores);
  const int64_t n = dets.size(0);
  if (n == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  const auto order =
      std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true)).contiguous();
  const auto dets_c = dets.contiguous();
  std::vector<int64_t> keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "nms_cpu", [&] {
    nms_cpu_impl<scalar_t>(dets_c.const_data_ptr<scalar_t>(), order.const_data_ptr<int64_t>(), n,
                           iou_threshold, keep);
  });
  auto out = at::empty({static_cast<int64_t>(keep.size())}, dets.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, CPU, m) { m.impl("nms", &detection::nms_cpu); }
