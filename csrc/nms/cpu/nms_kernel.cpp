// detection::nms, CPU (float32, float64): greedy non-maximum suppression.
// dets: Tensor[K, 4] (x1, y1, x2, y2), continuous coordinates (area = (x2 - x1) * (y2 - y1), no
// +1); a box is dropped when its IoU with a kept, higher-scored box is > iou_threshold. Returns
// the kept indices (int64) by decreasing score; equal scores keep their input order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "nms/nms_checks.h"

namespace detection {

namespace {

template <typename scalar_t>
void nms_cpu_impl(const at::Tensor& dets, const int64_t* order, int64_t n, double iou_threshold,
                  std::vector<int64_t>& keep) {
  const auto d = dets.accessor<scalar_t, 2>();
  std::vector<scalar_t> areas(n);
  for (int64_t i = 0; i < n; ++i) areas[i] = (d[i][2] - d[i][0]) * (d[i][3] - d[i][1]);
  std::vector<char> suppressed(n, 0);
  for (int64_t oi = 0; oi < n; ++oi) {
    const int64_t i = order[oi];
    if (suppressed[i]) continue;
    keep.push_back(i);
    const scalar_t ix1 = d[i][0], iy1 = d[i][1], ix2 = d[i][2], iy2 = d[i][3];
    const scalar_t iarea = areas[i];
    for (int64_t oj = oi + 1; oj < n; ++oj) {
      const int64_t j = order[oj];
      if (suppressed[j]) continue;
      const scalar_t w = std::max(static_cast<scalar_t>(0),
                                  std::min(ix2, d[j][2]) - std::max(ix1, d[j][0]));
      const scalar_t h = std::max(static_cast<scalar_t>(0),
                                  std::min(iy2, d[j][3]) - std::max(iy1, d[j][1]));
      const scalar_t inter = w * h;
      const scalar_t iou = inter / (iarea + areas[j] - inter);
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
    nms_cpu_impl<scalar_t>(dets_c, order.const_data_ptr<int64_t>(), n, iou_threshold, keep);
  });
  auto out = at::empty({static_cast<int64_t>(keep.size())}, dets.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, CPU, m) { m.impl("nms", &detection::nms_cpu); }
