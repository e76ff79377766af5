// RoIAlign-style sampling shared by roi_align and modulated_deform_roi_pool, CPU and CUDA: one
// definition of the per-element math (RoI and bin geometry, sample coordinates, corner indices,
// bilinear weights and the coefficients of the coordinate derivatives, the offset gradient's
// scale), called by roi_pool_cpu.h and roi_pool_cuda.cuh alike.
//
// Conventions (docs/CONVENTIONS.md):
//  * rois are (batch_index, x1, y1, x2, y2) in input-image pixels; the box in feature
//    coordinates is `x * spatial_scale - 0.5` when aligned (no rounding, no minimum size), or
//    `x * spatial_scale` with the box size clamped to at least 1 in legacy (aligned=False) mode.
//  * each bin averages grid_h x grid_w samples at `(i + 0.5) * bin / grid` inside the bin;
//    grid = sampling_ratio, or ceil(roi_size / pooled_size) when sampling_ratio is 0.
//  * boundary: a sample with y < -1, y > H, x < -1 or x > W reads 0 (and still counts in the
//    average); otherwise the coordinate is clamped into [0, H-1] x [0, W-1] and interpolated
//    bilinearly.
// All arithmetic is done in `T`, the accumulation ("opmath") type: float for half/bfloat16/float,
// double for double.
//
// The CPU kernels tabulate each RoI's corners and weights once and reuse them for every channel
// (and sum the channels per corner before applying the derivative coefficients); the CUDA
// kernels evaluate `sample` / `sample_with_grad_xy` per element. Both take the indices, weights
// and coefficients from the same functions below.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace detection {
namespace roi {

// Largest adaptive sampling grid per axis (see roi_geometry).
constexpr int kMaxGrid = 1 << 30;

// Geometry of one RoI: start corner, size, bin size and sampling grid.
template <typename T>
struct RoIGeometry {
  int64_t batch;  // batch index (validated by the caller)
  T start_w, start_h, roi_w, roi_h, bin_w, bin_h;
  int grid_h, grid_w;
  T count;  // number of samples per bin (grid_h * grid_w), at least 1
};

template <typename T>
C10_HOST_DEVICE inline RoIGeometry<T> roi_geometry(const T* roi, T spatial_scale, int pooled_h,
                                                   int pooled_w, int sampling_ratio, bool aligned) {
  RoIGeometry<T> g;
  g.batch = static_cast<int64_t>(roi[0]);
  const T shift = aligned ? static_cast<T>(0.5) : static_cast<T>(0);
  g.start_w = roi[1] * spatial_scale - shift;
  g.start_h = roi[2] * spatial_scale - shift;
  const T end_w = roi[3] * spatial_scale - shift;
  const T end_h = roi[4] * spatial_scale - shift;
  g.roi_w = end_w - g.start_w;
  g.roi_h = end_h - g.start_h;
  if (!aligned) {  // legacy: boxes at least one pixel large
    g.roi_w = g.roi_w > static_cast<T>(1) ? g.roi_w : static_cast<T>(1);
    g.roi_h = g.roi_h > static_cast<T>(1) ? g.roi_h : static_cast<T>(1);
  }
  g.bin_h = g.roi_h / static_cast<T>(pooled_h);
  g.bin_w = g.roi_w / static_cast<T>(pooled_w);
  // adaptive grid: an inverted box (x2 < x1 or y2 < y1, aligned) has a negative size; its grid
  // is 0 (no samples, output 0, as torchvision), never negative (a negative grid sized the
  // per-RoI sample tables as ~2^64 entries)
  // and it is capped at kMaxGrid (a grid beyond int range is undefined behaviour in the cast; a
  // RoI that large -- 2^30 pooled_size feature pixels -- is not a box)
  const T gh = ceil(g.roi_h / pooled_h), gw = ceil(g.roi_w / pooled_w);
  const T zero = static_cast<T>(0), most = static_cast<T>(kMaxGrid);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio
                                : (gh > zero ? static_cast<int>(gh < most ? gh : most) : 0);
  g.grid_w = sampling_ratio > 0 ? sampling_ratio
                                : (gw > zero ? static_cast<int>(gw < most ? gw : most) : 0);
  const T n = static_cast<T>(g.grid_h) * static_cast<T>(g.grid_w);  // may exceed int range
  g.count = n > static_cast<T>(1) ? n : static_cast<T>(1);
  return g;
}

// One coordinate of a bilinear sample along an axis of `size` pixels: the two neighbouring
// indices (clamped), their weights, and the unclamped coordinate (for the offset gradient).
// `valid` is false outside the band [-1, size] (and for NaN): such a sample reads 0.
template <typename T>
struct AxisSample {
  int low, high;
  T l, h;   // weights of `high` and `low`: l = coord - low (after clamping), h = 1 - l
  T coord;  // the unclamped coordinate
  bool valid;
};

template <typename T>
C10_HOST_DEVICE inline AxisSample<T> axis_sample(int size, T v) {
  AxisSample<T> a;
  a.coord = v;
  // written as a negated range test so that NaN (a NaN offset or RoI) is outside too: casting
  // NaN to int below would be undefined and index far outside the plane
  if (!(v >= static_cast<T>(-1) && v <= static_cast<T>(size)) || size <= 0) {
    a.low = a.high = 0;
    a.l = a.h = static_cast<T>(0);
    a.valid = false;
    return a;
  }
  if (v <= static_cast<T>(0)) v = static_cast<T>(0);
  a.low = static_cast<int>(v);
  if (a.low >= size - 1) {
    a.low = a.high = size - 1;
    v = static_cast<T>(a.low);
  } else {
    a.high = a.low + 1;
  }
  a.l = v - static_cast<T>(a.low);
  a.h = static_cast<T>(1) - a.l;
  a.valid = true;
  return a;
}

// The four corners of a sample inside the band, in the order (y, x) = (low, low), (low, high),
// (high, low), (high, high): their indices in a row-major plane of width `width` ...
template <typename T>
DETECTION_HOST_DEVICE void corner_offsets(const AxisSample<T>& ay, const AxisSample<T>& ax,
                                          int width, int64_t pos[4]) {
  const int64_t yl = static_cast<int64_t>(ay.low) * width;
  const int64_t yh = static_cast<int64_t>(ay.high) * width;
  pos[0] = yl + ax.low;
  pos[1] = yl + ax.high;
  pos[2] = yh + ax.low;
  pos[3] = yh + ax.high;
}

// ... their bilinear weights ...
template <typename T>
DETECTION_HOST_DEVICE void corner_weights(const AxisSample<T>& ay, const AxisSample<T>& ax,
                                          T w[4]) {
  w[0] = ay.h * ax.h;
  w[1] = ay.h * ax.l;
  w[2] = ay.l * ax.h;
  w[3] = ay.l * ax.l;
}

// ... and the coefficients of the sample's derivatives with respect to its coordinates x (cx)
// and y (cy). They use the (clamped) corner indices but the unclamped coordinate, as the
// reference operator does: inside the clamped border bands this is an extrapolated, not an
// exact, derivative.
template <typename T>
DETECTION_HOST_DEVICE void derivative_coefficients(const AxisSample<T>& ay, const AxisSample<T>& ax,
                                                   T cx[4], T cy[4]) {
  const T y = ay.coord, x = ax.coord;
  const T yl = static_cast<T>(ay.low), yh = static_cast<T>(ay.high);
  const T xl = static_cast<T>(ax.low), xh = static_cast<T>(ax.high);
  cx[0] = y - yh;
  cx[1] = yh - y;
  cx[2] = yl - y;
  cx[3] = y - yl;
  cy[0] = x - xh;
  cy[1] = xl - x;
  cy[2] = xh - x;
  cy[3] = x - xl;
}

// The weighted sum of four corner values, left to right: the bilinear sample from the weights of
// `corner_weights` (and the derivatives from the coefficients of `derivative_coefficients`).
template <typename T>
DETECTION_HOST_DEVICE T corner_sum(const T c[4], T v0, T v1, T v2, T v3) {
  return c[0] * v0 + c[1] * v1 + c[2] * v2 + c[3] * v3;
}

// Bilinear sample of one row-major plane of width `width`, y along rows and x along columns;
// 0 outside the band.
template <typename T, typename scalar_t>
DETECTION_HOST_DEVICE T sample(const scalar_t* plane, int width, const AxisSample<T>& ay,
                               const AxisSample<T>& ax) {
  if (!(ay.valid && ax.valid)) return static_cast<T>(0);
  int64_t pos[4];
  T w[4];
  corner_offsets(ay, ax, width, pos);
  corner_weights(ay, ax, w);
  return corner_sum(w, static_cast<T>(plane[pos[0]]), static_cast<T>(plane[pos[1]]),
                    static_cast<T>(plane[pos[2]]), static_cast<T>(plane[pos[3]]));
}

// The sampled value and its derivatives with respect to the sample coordinates x and y, from one
// read of the four corners (see derivative_coefficients). All 0 for a sample outside the band.
template <typename T, typename scalar_t>
DETECTION_HOST_DEVICE void sample_with_grad_xy(const scalar_t* plane, int width,
                                               const AxisSample<T>& ay, const AxisSample<T>& ax,
                                               T* val, T* dval_dx, T* dval_dy) {
  if (!(ay.valid && ax.valid)) {
    *val = *dval_dx = *dval_dy = static_cast<T>(0);
    return;
  }
  int64_t pos[4];
  T w[4], cx[4], cy[4];
  corner_offsets(ay, ax, width, pos);
  corner_weights(ay, ax, w);
  derivative_coefficients(ay, ax, cx, cy);
  const T v0 = static_cast<T>(plane[pos[0]]), v1 = static_cast<T>(plane[pos[1]]);
  const T v2 = static_cast<T>(plane[pos[2]]), v3 = static_cast<T>(plane[pos[3]]);
  *val = corner_sum(w, v0, v1, v2, v3);
  *dval_dx = corner_sum(cx, v0, v1, v2, v3);
  *dval_dy = corner_sum(cy, v0, v1, v2, v3);
}

// The samples [*first, *last) of one axis of a bin that fall inside the band [-1, size]; every
// other sample is outside and reads 0 (it still counts in the average). `coord(i)` is the very
// function the sampling loops evaluate (sample_y / sample_x): an arithmetic progression in i,
// monotonic also after rounding, so the band is one run of indices and two binary searches find
// it exactly. Loops over that run instead of the whole grid make a huge RoI with an adaptive grid
// cost what its part inside the map costs (a 1e5-pixel box used to take minutes). A NaN
// coordinate is outside, as in axis_sample.
template <typename T, typename Coord>
C10_HOST_DEVICE inline void band_range(int grid, int size, const Coord& coord, int* first,
                                       int* last) {
  *first = *last = 0;
  if (grid <= 0) return;
  const T lo = static_cast<T>(-1), hi = static_cast<T>(size);
  const T c0 = coord(0), c1 = coord(grid - 1);
  if (c0 != c0 || c1 != c1) return;  // NaN
  const bool up = c1 >= c0;
  // smallest i in [0, grid] with pred(i) true, for a predicate false then true along i
  auto search = [&](auto pred) {
    int a = 0, b = grid;
    while (a < b) {
      const int m = a + (b - a) / 2;
      if (pred(coord(m))) {
        b = m;
      } else {
        a = m + 1;
      }
    }
    return a;
  };
  if (up) {
    *first = search([&](T v) { return v >= lo; });
    *last = search([&](T v) { return v > hi; });
  } else {
    *first = search([&](T v) { return v <= hi; });
    *last = search([&](T v) { return v < lo; });
  }
  if (*last < *first) *last = *first;
}

// Sample coordinates of sample (iy, ix) of bin (ph, pw), the bin start shifted by (dx, dy).
template <typename T>
C10_HOST_DEVICE inline T sample_y(const RoIGeometry<T>& g, int ph, T dy, int iy) {
  return g.start_h + dy + ph * g.bin_h +
         (static_cast<T>(iy) + static_cast<T>(0.5)) * g.bin_h / static_cast<T>(g.grid_h);
}

template <typename T>
C10_HOST_DEVICE inline T sample_x(const RoIGeometry<T>& g, int pw, T dx, int ix) {
  return g.start_w + dx + pw * g.bin_w +
         (static_cast<T>(ix) + static_cast<T>(0.5)) * g.bin_w / static_cast<T>(g.grid_w);
}

// The in-band sample runs [y0, y1) x [x0, x1) of bin (ph, pw) shifted by (dx, dy).
template <typename T>
C10_HOST_DEVICE inline void bin_band(const RoIGeometry<T>& g, int ph, int pw, T dy, T dx,
                                     int height, int width, int* y0, int* y1, int* x0, int* x1) {
  band_range<T>(g.grid_h, height, [&](int iy) { return sample_y<T>(g, ph, dy, iy); }, y0, y1);
  band_range<T>(g.grid_w, width, [&](int ix) { return sample_x<T>(g, pw, dx, ix); }, x0, x1);
}

// The shift (dx, dy) of bin `bin` of a RoI by its offsets, x first: `offset` points at the
// RoI's [2, bins] offsets, or is null (no shift).
template <typename T, typename scalar_t>
DETECTION_HOST_DEVICE void bin_shift(const RoIGeometry<T>& g, const scalar_t* offset, int bin,
                                     int bins, T gamma, T* dx, T* dy) {
  *dx = 0;
  *dy = 0;
  if (offset != nullptr) {
    *dx = gamma * g.roi_w * static_cast<T>(offset[bin]);
    *dy = gamma * g.roi_h * static_cast<T>(offset[bins + bin]);
  }
}

// The offset gradient of a bin with mask m from the grad-weighted sums of its samples' x and y
// derivatives.
template <typename T>
DETECTION_HOST_DEVICE void offset_gradient(const RoIGeometry<T>& g, T gamma, T m, T sum_dx,
                                           T sum_dy, T* grad_x, T* grad_y) {
  *grad_x = gamma * g.roi_w * m * sum_dx / g.count;
  *grad_y = gamma * g.roi_h * m * sum_dy / g.count;
}

}  // namespace roi
}  // namespace detection
