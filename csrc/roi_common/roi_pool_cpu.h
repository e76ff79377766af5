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

#include "common/cpu_isa.h"
#include "common/cpu_layout.h"
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

// [N, C, H, W] -> contiguous [N, H, W, C] (common/cpu_layout.h: ATen's permuted copy is up to 10x
// slower at the paper config's feature maps).
inline at::Tensor channels_last(const at::Tensor& t) { return layout::nchw_to_nhwc(t); }

// grad [R, C, ph, pw] -> contiguous [R, ph * pw, C] (as channels_last, with one row of ph * pw
// pixels per RoI: ATen's transposed copy took 1.6x a plain copy of the tensor at 14x14 bins).
inline at::Tensor bins_last(const at::Tensor& grad) {
  return layout::nchw_to_nhwc(grad.reshape({grad.size(0), grad.size(1), 1, -1}))
      .view({grad.size(0), -1, grad.size(1)});
}

// The channel loops, compiled once per instruction-set variant (before, for the baseline ISA only:
// 4-wide SSE; benchmarks/RESULTS.md, seventh round). Unlike the deformable conv's, the AVX2 and
// AVX-512 variants do not contract a * b + c into an FMA (fp-contract=off), so every variant
// computes the forward and the input gradient bit for bit as the baseline one does, and as the
// CUDA kernels' emulation build does (tests/layers/test_shared_math.py). The offset/mask
// gradients' channel sums run in lanes of a fixed order (common/cpu_lanes.inc), so they too are
// the same bit for bit on every variant.
namespace isa_default {
#include "common/cpu_lanes.inc"
#include "roi_common/roi_pool_loops.inc"
}  // namespace isa_default
#if DETECTION_CPU_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=off")
namespace isa_avx2 {
#include "common/cpu_lanes.inc"
#include "roi_common/roi_pool_loops.inc"
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
#pragma GCC optimize("fp-contract=off")
namespace isa_avx512 {
#include "common/cpu_lanes.inc"
#include "roi_common/roi_pool_loops.inc"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

// output[R, C, ph, pw] from input_cl [N, H, W, C] (see the .inc).
template <typename scalar_t>
void roi_pool_forward_cpu(const scalar_t* input_cl, const scalar_t* rois, const scalar_t* offset,
                          const scalar_t* mask, scalar_t* output, int64_t num_rois,
                          int64_t channels, int height, int width, const PoolArgs& a) {
  DETECTION_CPU_ISA_CALL(roi_pool_forward_cpu<scalar_t>, input_cl, rois, offset, mask, output,
                         num_rois, channels, height, width, a);
}

// grad_input_cl [N, H, W, C] (zero-initialised by the caller) from grad_cl [R, ph * pw, C].
template <typename scalar_t>
void roi_pool_backward_input_cpu(const scalar_t* grad_cl,
                                 const std::vector<RoISamples<scalar_t>>& tables,
                                 const scalar_t* mask, scalar_t* grad_input_cl, int64_t channels,
                                 int height, int width, const PoolArgs& a) {
  DETECTION_CPU_ISA_CALL(roi_pool_backward_input_cpu<scalar_t>, grad_cl, tables, mask,
                         grad_input_cl, channels, height, width, a);
}

// grad_offset[R, 2, ph, pw] and / or grad_mask[R, 1, ph, pw], summed over channels.
template <typename scalar_t>
void roi_pool_backward_offset_mask_cpu(const scalar_t* grad_cl, const scalar_t* input_cl,
                                       const std::vector<RoISamples<scalar_t>>& tables,
                                       const scalar_t* mask, scalar_t* grad_offset,
                                       scalar_t* grad_mask, int64_t channels, int height, int width,
                                       const PoolArgs& a) {
  DETECTION_CPU_ISA_CALL(roi_pool_backward_offset_mask_cpu<scalar_t>, grad_cl, input_cl, tables,
                         mask, grad_offset, grad_mask, channels, height, width, a);
}

}  // namespace roi
}  // namespace detection
