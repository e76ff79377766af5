// Bilinear sampling and coordinate-gradient math of the modulated deformable convolution: one
// definition, called by the CPU (.cpp, deform_conv_loops.inc) and CUDA (.cu) kernels alike.
// Semantics: docs/CONVENTIONS.md.
//
// A sample at (y, x) is non-zero only inside the band -1 < y < H, -1 < x < W (NaN fails the test);
// there it is the bilinear interpolation of the input zero-padded by one pixel, with floor-based
// corners (y_low = floor(y), y_high = y_low + 1; same for x). The coordinate derivative is the
// floor-based one-sided derivative of the bilinear weights, and it is 0 outside the same band.
//
// Corner values: the CPU kernel reads them from a zero-padded channels-last copy of the image
// (a sample outside the band reads its all-zero block with ly = lx = 0); the CUDA kernels read
// the unpadded planes through `corners`, and evaluate a sample outside the band as the same zero
// corners with ly = lx = 0. The weights, the interpolation and the derivatives below are shared,
// written in the order the CPU loops evaluated them (their results are bit-identical to it).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace detection {
namespace deform_conv {

// Locates a sample: returns false outside the band (or for NaN); otherwise sets the top-left
// corner (y_low, x_low), in [-1, H-1] x [-1, W-1], and the fractional parts ly, lx in [0, 1).
template <typename acc_t>
DETECTION_HOST_DEVICE bool locate(acc_t y, acc_t x, int64_t height, int64_t width, int64_t& y_low,
                                  int64_t& x_low, acc_t& ly, acc_t& lx) {
  if (!(y > acc_t(-1) && y < acc_t(height) && x > acc_t(-1) && x < acc_t(width))) {
    return false;
  }
  const acc_t fy = ::floor(y);
  const acc_t fx = ::floor(x);
  y_low = static_cast<int64_t>(fy);
  x_low = static_cast<int64_t>(fx);
  ly = y - fy;
  lx = x - fx;
  return true;
}

// The four corner values of a located sample from an unpadded [H, W] plane; corners outside
// the image read 0. Order: (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high).
template <typename acc_t, typename scalar_t>
DETECTION_HOST_DEVICE void corners(const scalar_t* plane, int64_t height, int64_t width,
                                   int64_t y_low, int64_t x_low, acc_t v[4]) {
  const int64_t y_high = y_low + 1;
  const int64_t x_high = x_low + 1;
  const bool y0 = y_low >= 0, y1 = y_high <= height - 1;
  const bool x0 = x_low >= 0, x1 = x_high <= width - 1;
  v[0] = (y0 && x0) ? static_cast<acc_t>(plane[y_low * width + x_low]) : acc_t(0);
  v[1] = (y0 && x1) ? static_cast<acc_t>(plane[y_low * width + x_high]) : acc_t(0);
  v[2] = (y1 && x0) ? static_cast<acc_t>(plane[y_high * width + x_low]) : acc_t(0);
  v[3] = (y1 && x1) ? static_cast<acc_t>(plane[y_high * width + x_high]) : acc_t(0);
}

// The fractional parts of a located sample and their complements.
template <typename acc_t>
struct Fractions {
  acc_t ly, lx;  // from locate, in [0, 1)
  acc_t hy, hx;  // 1 - ly, 1 - lx
};

template <typename acc_t>
DETECTION_HOST_DEVICE Fractions<acc_t> fractions(acc_t ly, acc_t lx) {
  return Fractions<acc_t>{ly, lx, acc_t(1) - ly, acc_t(1) - lx};
}

// The masked bilinear weights m * w of the four corners (same order as `corners`); m = 1
// without a mask (exact: 1 * w == w).
template <typename acc_t>
DETECTION_HOST_DEVICE void bilinear_weights(const Fractions<acc_t>& f, acc_t m, acc_t w[4]) {
  w[0] = m * (f.hy * f.hx);
  w[1] = m * (f.hy * f.lx);
  w[2] = m * (f.ly * f.hx);
  w[3] = m * (f.ly * f.lx);
}

// The masked sample from the weights of `bilinear_weights` and the corner values v00 (y_low,
// x_low), v01 (y_low, x_high), v10 (y_high, x_low), v11 (y_high, x_high): the im2col entry.
template <typename acc_t>
DETECTION_HOST_DEVICE acc_t weighted_sum(const acc_t w[4], acc_t v00, acc_t v01, acc_t v10,
                                         acc_t v11) {
  return (w[0] * v00 + w[1] * v01) + (w[2] * v10 + w[3] * v11);
}

// The unmasked interpolated value from the corner values (the mask gradient's factor).
template <typename acc_t>
DETECTION_HOST_DEVICE acc_t interpolate(const Fractions<acc_t>& f, acc_t v00, acc_t v01, acc_t v10,
                                        acc_t v11) {
  return f.hy * (f.hx * v00 + f.lx * v01) + f.ly * (f.hx * v10 + f.lx * v11);
}

// Floor-based one-sided derivatives d value / dy and d value / dx from the corner values.
template <typename acc_t>
DETECTION_HOST_DEVICE void coordinate_gradient(const Fractions<acc_t>& f, acc_t v00, acc_t v01,
                                               acc_t v10, acc_t v11, acc_t& dy, acc_t& dx) {
  dy = f.hx * (v10 - v00) + f.lx * (v11 - v01);
  dx = f.hy * (v01 - v00) + f.ly * (v11 - v10);
}

}  // namespace deform_conv
}  // namespace detection
