// CPU implementation shared by roi_align and modulated_deform_roi_pool: RoIAlign sampling with an
// optional per-bin offset (bin start moved by gamma * roi_size * offset, x first) and an optional
// per-bin mask. roi_align is the special case offset = mask = null.
//
// Parallelism without float atomics: the forward runs over RoIs; the input gradient runs over
// channels (each thread owns whole input planes); the offset/mask gradients run over RoIs (each
// thread owns its RoIs' bins and reads the input). The backward builds the RoIs' sample tables
// once (build_tables, parallel over RoIs) for both of its passes; before, every thread of the
// input-gradient pass rebuilt all of them and the offset/mask pass built them again.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "roi_common/roi_sampling.h"

namespace detection {
namespace roi {

struct PoolArgs {
  int64_t pooled_h, pooled_w;
  double spatial_scale;
  int64_t sampling_ratio;
  bool aligned;
  double gamma;
};

// at::parallel_for grain (items per task) so that each task holds about at::internal::GRAIN_SIZE
// sample evaluations: tiny calls (tests, single RoIs) stay on the calling thread, where waking
// the OpenMP team would cost far more than the work.
inline int64_t grain_for(int64_t work_per_item) {
  const int64_t w = work_per_item > 0 ? work_per_item : 1;
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / w);
}

// Per-RoI sample table, built once per RoI and reused for every channel: for each bin, its
// samples inside the band only (band_range; the others read 0 and only count in g.count), each
// as four corners (corner_offsets and corner_weights) and, on request, the corners' coefficients
// of the x / y derivatives (derivative_coefficients: sample_with_grad_xy is linear in the corner
// values). The same functions give the CUDA kernels' per-element samples (roi_sampling.h). Bin
// b's corners are entries [4 * start[b], 4 * start[b + 1]).
template <typename T>
struct RoISamples {
  RoIGeometry<T> g;
  std::vector<int64_t> start;  // [bins + 1], in samples
  // [samples * 4], corner order (y, x): (low, low), (low, high), (high, low), (high, high)
  std::vector<int64_t> pos;
  std::vector<T> w;       // [samples * 4]
  std::vector<T> cx, cy;  // [samples * 4] when built with_derivatives

  template <typename scalar_t>
  void build(const T* roi, const scalar_t* offset, int height, int width, const PoolArgs& a,
             bool with_derivatives = false) {
    const int ph_n = static_cast<int>(a.pooled_h), pw_n = static_cast<int>(a.pooled_w);
    g = roi_geometry<T>(roi, static_cast<T>(a.spatial_scale), ph_n, pw_n,
                        static_cast<int>(a.sampling_ratio), a.aligned);
    const int bins = ph_n * pw_n;
    start.assign(1, 0);
    pos.clear();
    w.clear();
    cx.clear();
    cy.clear();
    const T gamma = static_cast<T>(a.gamma);
    // room for a full grid per bin (capped: a huge adaptive grid keeps only its in-band part)
    const int64_t most = static_cast<int64_t>(bins) *
                         std::min<int64_t>(int64_t(g.grid_h) * g.grid_w, int64_t(64)) * 4;
    start.reserve(bins + 1);
    pos.reserve(most);
    w.reserve(most);
    if (with_derivatives) {
      cx.reserve(most);
      cy.reserve(most);
    }
    for (int ph = 0; ph < ph_n; ++ph) {
      for (int pw = 0; pw < pw_n; ++pw) {
        const int bin = ph * pw_n + pw;
        T dx, dy;
        bin_shift<T, scalar_t>(g, offset, bin, bins, gamma, &dx, &dy);
        int y0, y1, x0, x1;
        bin_band<T>(g, ph, pw, dy, dx, height, width, &y0, &y1, &x0, &x1);
        xs_.clear();
        for (int ix = x0; ix < x1; ++ix) {
          xs_.push_back(axis_sample<T>(width, sample_x<T>(g, pw, dx, ix)));
        }
        for (int iy = y0; iy < y1; ++iy) {
          const AxisSample<T> ay = axis_sample<T>(height, sample_y<T>(g, ph, dy, iy));
          if (!ay.valid) continue;
          for (const AxisSample<T>& ax : xs_) {
            if (!ax.valid) continue;
            add(ay, ax, width, with_derivatives);
          }
        }
        start.push_back(static_cast<int64_t>(pos.size() / 4));
      }
    }
  }

 private:
  std::vector<AxisSample<T>> xs_;

  void add(const AxisSample<T>& ay, const AxisSample<T>& ax, int width, bool with_derivatives) {
    int64_t p[4];
    T c[4], d[4];
    corner_offsets(ay, ax, width, p);
    pos.insert(pos.end(), p, p + 4);
    corner_weights(ay, ax, c);
    w.insert(w.end(), c, c + 4);
    if (!with_derivatives) return;
    derivative_coefficients(ay, ax, c, d);
    cx.insert(cx.end(), c, c + 4);
    cy.insert(cy.end(), d, d + 4);
  }
};

// The sample tables of all RoIs (offset [R, 2, ph, pw] or null), built in parallel over RoIs:
// shared by the backward's input-gradient and offset/mask passes.
template <typename scalar_t>
std::vector<RoISamples<scalar_t>> build_tables(const scalar_t* rois, const scalar_t* offset,
                                               int64_t num_rois, int height, int width,
                                               const PoolArgs& a, bool with_derivatives) {
  const int64_t bins = a.pooled_h * a.pooled_w;
  std::vector<RoISamples<scalar_t>> tables(num_rois);
  at::parallel_for(0, num_rois, grain_for(bins * 16), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      tables[r].build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a,
                      with_derivatives);
    }
  });
  return tables;
}

// The channel loops run over contiguous channels (SIMD): the kernels read the input and the
// output gradient channels-last (input_cl [N, H, W, C], grad_cl [R, ph * pw, C]: see
// channels_last / bins_last below) and accumulate the input gradient channels-last. Per output
// element and per input-gradient element the additions are those of the per-channel loops they
// replaced, in the same order.

// [N, C, H, W] -> contiguous [N, H, W, C].
inline at::Tensor channels_last(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).contiguous();
}

// grad [R, C, ph, pw] -> contiguous [R, ph * pw, C].
inline at::Tensor bins_last(const at::Tensor& grad) {
  return grad.reshape({grad.size(0), grad.size(1), grad.size(2) * grad.size(3)})
      .transpose(1, 2)
      .contiguous();
}

// output[R, C, ph, pw] from input_cl [N, H, W, C]; rois in T (float or double); offset
// [R, 2, ph, pw] / mask [R, 1, ph, pw] may be null.
template <typename scalar_t>
void roi_pool_forward_cpu(const scalar_t* input_cl, const scalar_t* rois, const scalar_t* offset,
                          const scalar_t* mask, scalar_t* output, int64_t num_rois,
                          int64_t channels, int height, int width, const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w, C = channels;
  const int64_t plane = static_cast<int64_t>(height) * width;
  at::parallel_for(0, num_rois, grain_for(channels * bins * 4), [&](int64_t begin, int64_t end) {
    RoISamples<T> s;
    std::vector<T> acc_buf(C);
    T* acc = acc_buf.data();
    for (int64_t r = begin; r < end; ++r) {
      s.build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a);
      const T* input_n = input_cl + s.g.batch * plane * C;
      T* out = output + r * C * bins;
      const int64_t* pos = s.pos.data();
      const T* w = s.w.data();
      for (int64_t bin = 0; bin < bins; ++bin) {
        std::fill(acc, acc + C, static_cast<T>(0));
        for (int64_t k = s.start[bin]; k < s.start[bin + 1]; ++k, pos += 4, w += 4) {
          const T* v0 = input_n + pos[0] * C;
          const T* v1 = input_n + pos[1] * C;
          const T* v2 = input_n + pos[2] * C;
          const T* v3 = input_n + pos[3] * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += corner_sum(w, v0[c], v1[c], v2[c], v3[c]);
        }
        const T m = mask ? mask[r * bins + bin] : static_cast<T>(1);
        for (int64_t c = 0; c < C; ++c) {
          const T v = acc[c] / s.g.count;
          out[c * bins + bin] = mask ? v * m : v;
        }
      }
    }
  });
}

// grad_input_cl [N, H, W, C] (zero-initialised by the caller) from grad_cl [R, ph * pw, C], with
// the RoIs' tables from build_tables. Parallel over runs of channels: a task owns its channels of
// every pixel (no atomics; the split does not change any sum).
template <typename scalar_t>
void roi_pool_backward_input_cpu(const scalar_t* grad_cl,
                                 const std::vector<RoISamples<scalar_t>>& tables,
                                 const scalar_t* mask, scalar_t* grad_input_cl, int64_t channels,
                                 int height, int width, const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w, num_rois = static_cast<int64_t>(tables.size());
  const int64_t plane = static_cast<int64_t>(height) * width, C = channels;
  const int64_t chunk = std::max<int64_t>(grain_for(num_rois * bins * 4), std::min<int64_t>(C, 16));
  at::parallel_for(0, C, chunk, [&](int64_t c_begin, int64_t c_end) {
    const int64_t n = c_end - c_begin;
    std::vector<T> gbin_buf(n);
    T* gbin = gbin_buf.data();
    for (int64_t r = 0; r < num_rois; ++r) {
      const RoISamples<T>& s = tables[r];
      T* gp = grad_input_cl + s.g.batch * plane * C + c_begin;
      const T* go = grad_cl + r * bins * C + c_begin;
      const int64_t* pos = s.pos.data();
      const T* w = s.w.data();
      for (int64_t bin = 0; bin < bins; ++bin) {
        const T m = mask ? mask[r * bins + bin] : static_cast<T>(1);
        for (int64_t c = 0; c < n; ++c) {
          const T g = go[bin * C + c] / s.g.count;
          gbin[c] = mask ? g * m : g;
        }
        for (int64_t k = s.start[bin]; k < s.start[bin + 1]; ++k, pos += 4, w += 4) {
          T* d0 = gp + pos[0] * C;
          T* d1 = gp + pos[1] * C;
          T* d2 = gp + pos[2] * C;
          T* d3 = gp + pos[3] * C;
          const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
          // d0..d3 may be one pixel (clamped corners): the same channel c, in corner order
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) {
            d0[c] += w0 * gbin[c];
            d1[c] += w1 * gbin[c];
            d2[c] += w2 * gbin[c];
            d3[c] += w3 * gbin[c];
          }
        }
      }
    }
  });
}

// grad_offset[R, 2, ph, pw] (when offset is given) and grad_mask[R, 1, ph, pw] (when mask is
// given), summed over channels; each thread owns its RoIs. A sample's value and its x/y
// derivatives are linear in its four corner values with coefficients that do not depend on the
// channel (RoISamples' w, cx, cy), so the channel sum is taken first, per corner:
// S[corner] = sum_c grad[c, bin] * input[c, corner] (a dot product over contiguous channels of
// grad_cl and input_cl), and the coefficients are applied once per RoI. The tables
// (build_tables) must have been built with derivatives.
template <typename scalar_t>
void roi_pool_backward_offset_mask_cpu(const scalar_t* grad_cl, const scalar_t* input_cl,
                                       const std::vector<RoISamples<scalar_t>>& tables,
                                       const scalar_t* mask, scalar_t* grad_offset,
                                       scalar_t* grad_mask, int64_t channels, int height, int width,
                                       const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w, num_rois = static_cast<int64_t>(tables.size());
  const int64_t plane = static_cast<int64_t>(height) * width, C = channels;
  const T gamma = static_cast<T>(a.gamma);
  at::parallel_for(0, num_rois, grain_for(channels * bins * 4), [&](int64_t begin, int64_t end) {
    std::vector<T> corner_sum;  // [samples * 4]
    for (int64_t r = begin; r < end; ++r) {
      const RoISamples<T>& s = tables[r];
      corner_sum.resize(s.pos.size());
      const T* input_n = input_cl + s.g.batch * plane * C;
      for (int64_t bin = 0; bin < bins; ++bin) {
        const T* g = grad_cl + (r * bins + bin) * C;
        for (int64_t j = 4 * s.start[bin]; j < 4 * s.start[bin + 1]; ++j) {
          const T* p = input_n + s.pos[j] * C;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t c = 0; c < C; ++c) acc += g[c] * p[c];
          corner_sum[j] = acc;
        }
      }
      for (int64_t bin = 0; bin < bins; ++bin) {
        T val = 0, dx = 0, dy = 0;
        for (int64_t j = 4 * s.start[bin]; j < 4 * s.start[bin + 1]; ++j) {
          val += s.w[j] * corner_sum[j];
          dx += s.cx[j] * corner_sum[j];
          dy += s.cy[j] * corner_sum[j];
        }
        const T m = mask ? mask[r * bins + bin] : static_cast<T>(1);
        if (grad_mask) grad_mask[r * bins + bin] = val / s.g.count;
        if (grad_offset) {
          offset_gradient(s.g, gamma, m, dx, dy, &grad_offset[r * 2 * bins + bin],
                          &grad_offset[r * 2 * bins + bins + bin]);
        }
      }
    }
  });
}

}  // namespace roi
}  // namespace detection
