// Bilinear sampling and coordinate-gradient math of the modulated deformable convolution,
// shared by the CPU (.cpp) and CUDA (.cu) kernels. Semantics: ../shared/reference/CONVENTIONS.md.
//
// A sample at (y, x) is non-zero only inside the band -1 < y < H, -1 < x < W (NaN fails the test);
// there it is the bilinear interpolation of the input zero-padded by one pixel, with floor-based
// corners (y_low = floor(y), y_high = y_low + 1; same for x). The coordinate derivative is the
// floor-based one-sided derivative of the bilinear weights, and it is 0 outside the same band.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DCN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DCN_HOST_DEVICE inline
#endif

namespace detection {
namespace deform_conv {

// Locates a sample: returns false outside the band (or for NaN); otherwise sets the top-left
// corner (y_low, x_low), in [-1, H-1] x [-1, W-1], and the fractional parts ly, lx in [0, 1).
template <typename acc_t>
DCN_HOST_DEVICE bool locate(acc_t y, acc_t x, int64_t height, int64_t width, int64_t& y_low,
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
DCN_HOST_DEVICE void corners(const scalar_t* plane, int64_t height, int64_t width, int64_t y_low,
                             int64_t x_low, acc_t v[4]) {
  const int64_t y_high = y_low + 1;
  const int64_t x_high = x_low + 1;
  const bool y0 = y_low >= 0, y1 = y_high <= height - 1;
  const bool x0 = x_low >= 0, x1 = x_high <= width - 1;
  v[0] = (y0 && x0) ? static_cast<acc_t>(plane[y_low * width + x_low]) : acc_t(0);
  v[1] = (y0 && x1) ? static_cast<acc_t>(plane[y_low * width + x_high]) : acc_t(0);
  v[2] = (y1 && x0) ? static_cast<acc_t>(plane[y_high * width + x_low]) : acc_t(0);
  v[3] = (y1 && x1) ? static_cast<acc_t>(plane[y_high * width + x_high]) : acc_t(0);
}

// Bilinear weights of the four corners (same order as `corners`).
template <typename acc_t>
DCN_HOST_DEVICE void bilinear_weights(acc_t ly, acc_t lx, acc_t w[4]) {
  const acc_t hy = acc_t(1) - ly;
  const acc_t hx = acc_t(1) - lx;
  w[0] = hy * hx;
  w[1] = hy * lx;
  w[2] = ly * hx;
  w[3] = ly * lx;
}

// Interpolated value from corner values.
template <typename acc_t>
DCN_HOST_DEVICE acc_t interpolate(const acc_t v[4], acc_t ly, acc_t lx) {
  const acc_t hy = acc_t(1) - ly;
  const acc_t hx = acc_t(1) - lx;
  return hy * (hx * v[0] + lx * v[1]) + ly * (hx * v[2] + lx * v[3]);
}

// Floor-based one-sided derivatives d value / dy and d value / dx from corner values.
template <typename acc_t>
DCN_HOST_DEVICE void coordinate_gradient(const acc_t v[4], acc_t ly, acc_t lx, acc_t& dy,
                                         acc_t& dx) {
  const acc_t hy = acc_t(1) - ly;
  const acc_t hx = acc_t(1) - lx;
  dy = hx * (v[2] - v[0]) + lx * (v[3] - v[1]);
  dx = hy * (v[1] - v[0]) + ly * (v[3] - v[2]);
}

}  // namespace deform_conv
}  // namespace detection
