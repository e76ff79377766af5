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

// Per-RoI sample table: for each bin, its grid_h row samples and grid_w column samples.
template <typename T>
struct RoISamples {
  RoIGeometry<T> g;
  std::vector<AxisSample<T>> ys, xs;  // [bins * grid_h], [bins * grid_w]

  template <typename scalar_t>
  void build(const T* roi, const scalar_t* offset, int height, int width, const PoolArgs& a) {
    const int ph_n = static_cast<int>(a.pooled_h), pw_n = static_cast<int>(a.pooled_w);
    g = roi_geometry<T>(roi, static_cast<T>(a.spatial_scale), ph_n, pw_n,
                        static_cast<int>(a.sampling_ratio), a.aligned);
    const int bins = ph_n * pw_n;
    ys.resize(static_cast<size_t>(bins) * g.grid_h);
    xs.resize(static_cast<size_t>(bins) * g.grid_w);
    const T gamma = static_cast<T>(a.gamma);
    for (int ph = 0; ph < ph_n; ++ph) {
      for (int pw = 0; pw < pw_n; ++pw) {
        const int bin = ph * pw_n + pw;
        T dx = 0, dy = 0;
        if (offset != nullptr) {
          dx = gamma * g.roi_w * static_cast<T>(offset[bin]);
          dy = gamma * g.roi_h * static_cast<T>(offset[bins + bin]);
        }
        for (int iy = 0; iy < g.grid_h; ++iy)
          ys[bin * g.grid_h + iy] = axis_sample<T>(height, sample_y<T>(g, ph, dy, iy));
        for (int ix = 0; ix < g.grid_w; ++ix)
          xs[bin * g.grid_w + ix] = axis_sample<T>(width, sample_x<T>(g, pw, dx, ix));
      }
    }
  }

  // Flattened corners: for sample k = (bin * grid_h + iy) * grid_w + ix, the four plane indices
  // and weights (index -1 for a sample outside the band: skipped), computed once per RoI and
  // reused for every channel.
  std::vector<int64_t> pos;  // [samples * 4]
  std::vector<T> w;          // [samples * 4]

  void build_corners(int width, int64_t bins) {
    const int64_t per_bin = static_cast<int64_t>(g.grid_h) * g.grid_w;
    pos.resize(static_cast<size_t>(bins * per_bin * 4));
    w.resize(pos.size());
    int64_t k = 0;
    for (int64_t bin = 0; bin < bins; ++bin) {
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const auto& ay = ys[bin * g.grid_h + iy];
        for (int ix = 0; ix < g.grid_w; ++ix, k += 4) {
          const auto& ax = xs[bin * g.grid_w + ix];
          if (!(ay.valid && ax.valid)) {
            pos[k] = pos[k + 1] = pos[k + 2] = pos[k + 3] = -1;
            w[k] = w[k + 1] = w[k + 2] = w[k + 3] = static_cast<T>(0);
            continue;
          }
          pos[k] = static_cast<int64_t>(ay.low) * width + ax.low;
          pos[k + 1] = static_cast<int64_t>(ay.low) * width + ax.high;
          pos[k + 2] = static_cast<int64_t>(ay.high) * width + ax.low;
          pos[k + 3] = static_cast<int64_t>(ay.high) * width + ax.high;
          w[k] = ay.h * ax.h;
          w[k + 1] = ay.h * ax.l;
          w[k + 2] = ay.l * ax.h;
          w[k + 3] = ay.l * ax.l;
        }
      }
    }
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
      s.build_corners(width, bins);
      const int64_t per_bin = static_cast<int64_t>(s.g.grid_h) * s.g.grid_w;
      const T* input_n = input + s.g.batch * channels * plane;
      for (int64_t c = 0; c < channels; ++c) {
        const T* p = input_n + c * plane;
        T* out = output + (r * channels + c) * bins;
        const int64_t* pos = s.pos.data();
        const T* w = s.w.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          T acc = 0;
          for (int64_t k = 0; k < per_bin; ++k, pos += 4, w += 4) {
            if (pos[0] < 0) continue;
            acc += w[0] * p[pos[0]] + w[1] * p[pos[1]] + w[2] * p[pos[2]] + w[3] * p[pos[3]];
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
void roi_pool_backward_input_cpu(const scalar_t* grad, const scalar_t* rois,
                                 const scalar_t* offset, const scalar_t* mask,
                                 scalar_t* grad_input, int64_t num_rois, int64_t channels,
                                 int height, int width, const PoolArgs& a) {
  using T = scalar_t;
  const int64_t bins = a.pooled_h * a.pooled_w;
  const int64_t plane = static_cast<int64_t>(height) * width;
  at::parallel_for(0, channels, grain_for(num_rois * bins * 4), [&](int64_t c_begin, int64_t c_end) {
    RoISamples<T> s;
    for (int64_t r = 0; r < num_rois; ++r) {
      s.build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a);
      s.build_corners(width, bins);
      const int64_t per_bin = static_cast<int64_t>(s.g.grid_h) * s.g.grid_w;
      for (int64_t c = c_begin; c < c_end; ++c) {
        T* gp = grad_input + (s.g.batch * channels + c) * plane;
        const T* go = grad + (r * channels + c) * bins;
        const int64_t* pos = s.pos.data();
        const T* w = s.w.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          T gbin = go[bin] / s.g.count;
          if (mask) gbin *= mask[r * bins + bin];
          for (int64_t k = 0; k < per_bin; ++k, pos += 4, w += 4) {
            if (pos[0] < 0) continue;
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
// derivatives (sample_with_grad_xy) are linear in its four corner values with coefficients that
// do not depend on the channel, so the channel sum is taken first, per corner:
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
    std::vector<T> corner_sum;  // [bins * grid_h * grid_w * 4]
    for (int64_t r = begin; r < end; ++r) {
      s.build(rois + r * 5, offset ? offset + r * 2 * bins : nullptr, height, width, a);
      s.build_corners(width, bins);
      const int64_t per_bin = static_cast<int64_t>(s.g.grid_h) * s.g.grid_w;
      corner_sum.assign(s.pos.size(), static_cast<T>(0));
      const T* input_n = input + s.g.batch * channels * plane;
      for (int64_t c = 0; c < channels; ++c) {
        const T* p = input_n + c * plane;
        const T* go = grad + (r * channels + c) * bins;
        const int64_t* pos = s.pos.data();
        T* acc = corner_sum.data();
        for (int64_t bin = 0; bin < bins; ++bin) {
          const T g = go[bin];
          for (int64_t k = 0; k < per_bin; ++k, pos += 4, acc += 4) {
            if (pos[0] < 0) continue;
            acc[0] += g * p[pos[0]];
            acc[1] += g * p[pos[1]];
            acc[2] += g * p[pos[2]];
            acc[3] += g * p[pos[3]];
          }
        }
      }
      // corner order (y, x): (low, low), (low, high), (high, low), (high, high)
      const T* S = corner_sum.data();
      const T* w = s.w.data();
      for (int64_t bin = 0; bin < bins; ++bin) {
        T val = 0, dx = 0, dy = 0;
        for (int iy = 0; iy < s.g.grid_h; ++iy) {
          const auto& ay = s.ys[bin * s.g.grid_h + iy];
          for (int ix = 0; ix < s.g.grid_w; ++ix, S += 4, w += 4) {
            const auto& ax = s.xs[bin * s.g.grid_w + ix];
            if (!(ay.valid && ax.valid)) continue;
            const T y = ay.coord, x = ax.coord;
            const T yl = static_cast<T>(ay.low), yh = static_cast<T>(ay.high);
            const T xl = static_cast<T>(ax.low), xh = static_cast<T>(ax.high);
            val += w[0] * S[0] + w[1] * S[1] + w[2] * S[2] + w[3] * S[3];
            dx += S[3] * (y - yl) + S[1] * (yh - y) + S[2] * (yl - y) + S[0] * (y - yh);
            dy += S[3] * (x - xl) + S[2] * (xh - x) + S[1] * (xl - x) + S[0] * (x - xh);
          }
        }
        const T m = mask ? mask[r * bins + bin] : static_cast<T>(1);
        if (grad_mask) grad_mask[r * bins + bin] = val / s.g.count;
        if (grad_offset) {
          grad_offset[r * 2 * bins + bin] = gamma * s.g.roi_w * m * dx / s.g.count;
          grad_offset[r * 2 * bins + bins + bin] = gamma * s.g.roi_h * m * dy / s.g.count;
        }
      }
    }
  });
}

}  // namespace roi
}  // namespace detection
