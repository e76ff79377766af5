// Argument checks of detection::nms shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace detection {

inline void nms_check_args(const at::Tensor& dets, const at::Tensor& scores) {
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4,
              "nms: dets (boxes) must be a Tensor[K, 4] (x1, y1, x2, y2), got shape ",
              dets.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0),
              "nms: scores must be a Tensor[K] with one score per box (K = ", dets.size(0),
              "), got shape ", scores.sizes());
  TORCH_CHECK(at::isFloatingType(dets.scalar_type()),
              "nms: dets (boxes) must be floating point, got ", dets.scalar_type());
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()) ||
                  at::isIntegralType(scores.scalar_type(), /*includeBool=*/false),
              "nms: scores must be a real-valued tensor, got ", scores.scalar_type());
  TORCH_CHECK(dets.device() == scores.device(),
              "nms: dets and scores must be on the same device, got ", dets.device(), " and ",
              scores.device());
}

}  // namespace detection
