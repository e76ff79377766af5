// CPU implementation shared by roi_align and modulated_deform_roi_pool: RoIAlign sampling with an
// optional per-bin offset (bin start moved by gamma * roi_size * offset, x first) and an optional
// per-bin mask. roi_align is the special case offset = mask = null.
//
// Parallelism without float atomics: the forward runs over RoIs; the input gradient runs over
// channels (each thread owns whole input planes); the offset/mask gradients run over RoIs (each
// thread owns its RoIs' bins and reads the input).
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

// output[R, C, ph, pw]; rois in T (float or double); offset [R, 2, ph, pw] / mask [R, 1, ph, pw]
// may be null.
template <typename scalar_t>
void roi_pool_forward_cpu(const scalar_t* input, const scalar_t* rois, const scalar_t* offset,
                          const scalar_t* mask, scalar_t* output, int64_t num_rois,
                          int64_t channels, int height, int width, const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w;
  const int64_t plane = static_cast<int64_t>(height) * width;
  at::parallel_for(0, num_rois, grain_for(channels * bins * 4), [&](int64_t begin, int64_t end) {
    RoISamples<T> s;
    for (int64_t r = begin; r < end; ++r) {
      s.build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a);
      const T* input_n = input + s.g.batch * channels * plane;
      for (int64_t c = 0; c < channels; ++c) {
        const T* p = input_n + c * plane;
        T* out = output + (r * channels + c) * bins;
        const int64_t* pos = s.pos.data();
        const T* w = s.w.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          T acc = 0;
          for (int64_t k = s.start[bin]; k < s.start[bin + 1]; ++k, pos += 4, w += 4) {
            acc += corner_sum(w, p[pos[0]], p[pos[1]], p[pos[2]], p[pos[3]]);
          }
          acc /= s.g.count;
          out[bin] = mask ? acc * mask[r * bins + bin] : acc;
        }
      }
    }
  });
}

// grad_input[N, C, H, W] (zero-initialised by the caller) from grad[R, C, ph, pw].
template <typename scalar_t>
void roi_pool_backward_input_cpu(const scalar_t* grad, const scalar_t* rois, const scalar_t* offset,
                                 const scalar_t* mask, scalar_t* grad_input, int64_t num_rois,
                                 int64_t channels, int height, int width, const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w;
  const int64_t plane = static_cast<int64_t>(height) * width;
  at::parallel_for(
      0, channels, grain_for(num_rois * bins * 4), [&](int64_t c_begin, int64_t c_end) {
        RoISamples<T> s;
        for (int64_t r = 0; r < num_rois; ++r) {
          s.build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a);
          for (int64_t c = c_begin; c < c_end; ++c) {
            T* gp = grad_input + (s.g.batch * channels + c) * plane;
            const T* go = grad + (r * channels + c) * bins;
            const int64_t* pos = s.pos.data();
            const T* w = s.w.data();
            for (int64_t bin = 0; bin < bins; ++bin) {
              T gbin = go[bin] / s.g.count;
              if (mask) gbin *= mask[r * bins + bin];
              for (int64_t k = s.start[bin]; k < s.start[bin + 1]; ++k, pos += 4, w += 4) {
                gp[pos[0]] += w[0] * gbin;
                gp[pos[1]] += w[1] * gbin;
                gp[pos[2]] += w[2] * gbin;
                gp[pos[3]] += w[3] * gbin;
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
// S[corner] = sum_c grad[c, bin] * input[c, corner] (the forward's gather, once per channel),
// and the coefficients are applied once per RoI.
template <typename scalar_t>
void roi_pool_backward_offset_mask_cpu(const scalar_t* grad, const scalar_t* input,
                                       const scalar_t* rois, const scalar_t* offset,
                                       const scalar_t* mask, scalar_t* grad_offset,
                                       scalar_t* grad_mask, int64_t num_rois, int64_t channels,
                                       int height, int width, const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w;
  const int64_t plane = static_cast<int64_t>(height) * width;
  const T gamma = static_cast<T>(a.gamma);
  at::parallel_for(0, num_rois, grain_for(channels * bins * 4), [&](int64_t begin, int64_t end) {
    RoISamples<T> s;
    std::vector<T> corner_sum;  // [samples * 4]
    for (int64_t r = begin; r < end; ++r) {
      s.build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a, true);
      corner_sum.assign(s.pos.size(), static_cast<T>(0));
      const T* input_n = input + s.g.batch * channels * plane;
      for (int64_t c = 0; c < channels; ++c) {
        const T* p = input_n + c * plane;
        const T* go = grad + (r * channels + c) * bins;
        const int64_t* pos = s.pos.data();
        T* acc = corner_sum.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          const T g = go[bin];
          for (int64_t k = s.start[bin]; k < s.start[bin + 1]; ++k, pos += 4, acc += 4) {
            acc[0] += g * p[pos[0]];
            acc[1] += g * p[pos[1]];
            acc[2] += g * p[pos[2]];
            acc[3] += g * p[pos[3]];
          }
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
