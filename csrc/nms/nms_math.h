// The IoU of two boxes (x1, y1, x2, y2), continuous coordinates (area = (x2 - x1) * (y2 - y1), no
// +1): one definition, called by the CPU and CUDA NMS kernels. A box is suppressed when its IoU
// with a kept, higher-scored box is > the threshold, compared in double.
#pragma once

#include "common/host_device.h"

namespace detection {
namespace nms {

// std::min / std::max, usable on the device too. NaN: the first argument when either is NaN
// (the comparison is false), as std::min / std::max.
template <typename T>
DETECTION_HOST_DEVICE T min_of(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
DETECTION_HOST_DEVICE T max_of(T a, T b) {
  return a < b ? b : a;
}

template <typename T>
DETECTION_HOST_DEVICE T box_area(T x1, T y1, T x2, T y2) {
  return (x2 - x1) * (y2 - y1);
}

// IoU of box a (the higher-scored one) and box b, given their areas (box_area).
template <typename T>
DETECTION_HOST_DEVICE T iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2,
                            T area_b) {
  const T w = max_of(static_cast<T>(0), min_of(ax2, bx2) - max_of(ax1, bx1));
  const T h = max_of(static_cast<T>(0), min_of(ay2, by2) - max_of(ay1, by1));
  const T inter = w * h;
  return inter / (area_a + area_b - inter);
}

}  // namespace nms
}  // namespace detection
