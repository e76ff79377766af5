// CUDA implementation shared by roi_align and modulated_deform_roi_pool (see roi_pool_cpu.h for
// the CPU twin; the per-element math of both is roi_sampling.h's). Element types: float, double,
// half, bfloat16; arithmetic in acc_t = at::opmath_type<scalar_t> (float for half/bfloat16); rois
// are given in acc_t.
//
// forward: one thread per output element; grad_input: one thread per grad element, scattered
// with gpuAtomicAdd into an acc_t buffer, or, under torch.use_deterministic_algorithms(True),
// one thread per input plane with a fixed summation order (no atomics); grad_offset / grad_mask:
// one thread per (RoI, bin) summing over channels (no atomics).
#pragma once

#include <ATen/Context.h>

#include "common/cuda_compat.cuh"
#include "roi_common/roi_sampling.h"

namespace detection {
namespace roi {

#define DETECTION_CUDA_KERNEL_LOOP(i, n)                                                 \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

struct CudaPoolArgs {
  int pooled_h, pooled_w;
  int sampling_ratio;
  bool aligned;
};

// Geometry of RoI r, validated batch index (outside [0, N) -> -1, never read).
template <typename acc_t>
__device__ inline RoIGeometry<acc_t> roi_at(const acc_t* rois, int64_t r, acc_t scale,
                                            const CudaPoolArgs& a, int64_t batch_size) {
  RoIGeometry<acc_t> g =
      roi_geometry<acc_t>(rois + r * 5, scale, a.pooled_h, a.pooled_w, a.sampling_ratio, a.aligned);
  if (g.batch < 0 || g.batch >= batch_size) g.batch = -1;
  return g;
}

template <typename scalar_t, typename acc_t>
__global__ void roi_pool_forward_kernel(int64_t total, const scalar_t* __restrict__ input,
                                        const acc_t* __restrict__ rois,
                                        const scalar_t* __restrict__ offset,
                                        const scalar_t* __restrict__ mask,
                                        scalar_t* __restrict__ output, int64_t batch_size,
                                        int64_t channels, int height, int width, acc_t scale,
                                        acc_t gamma, CudaPoolArgs a) {
  const int bins = a.pooled_h * a.pooled_w;
  DETECTION_CUDA_KERNEL_LOOP(index, total) {
    const int bin = static_cast<int>(index % bins);
    const int64_t c = (index / bins) % channels;
    const int64_t r = index / bins / channels;
    const int ph = bin / a.pooled_w, pw = bin % a.pooled_w;
    const RoIGeometry<acc_t> g = roi_at<acc_t>(rois, r, scale, a, batch_size);
    if (g.batch < 0) {
      output[index] = static_cast<scalar_t>(0);
      continue;
    }
    acc_t dx, dy;
    bin_shift<acc_t, scalar_t>(g, offset != nullptr ? offset + r * 2 * bins : nullptr, bin, bins,
                               gamma, &dx, &dy);
    const scalar_t* plane = input + (g.batch * channels + c) * height * width;
    acc_t acc = 0;
    int y0, y1, x0, x1;
    bin_band<acc_t>(g, ph, pw, dy, dx, height, width, &y0, &y1, &x0, &x1);
    for (int iy = y0; iy < y1; ++iy) {
      const AxisSample<acc_t> ay = axis_sample<acc_t>(height, sample_y<acc_t>(g, ph, dy, iy));
      for (int ix = x0; ix < x1; ++ix) {
        const AxisSample<acc_t> ax = axis_sample<acc_t>(width, sample_x<acc_t>(g, pw, dx, ix));
        acc += sample<acc_t, scalar_t>(plane, width, ay, ax);
      }
    }
    acc /= g.count;
    if (mask != nullptr) acc *= static_cast<acc_t>(mask[r * bins + bin]);
    output[index] = static_cast<scalar_t>(acc);
  }
}

// Scatters grad_output[r, c, bin] into the [H, W] plane gp (plain adds unless Atomic).
template <bool Atomic, typename scalar_t, typename acc_t>
__device__ inline void scatter_bin(const scalar_t* grad, const acc_t* rois, const scalar_t* offset,
                                   const scalar_t* mask, acc_t* gp, const RoIGeometry<acc_t>& g,
                                   int64_t r, int64_t c, int bin, int64_t channels, int height,
                                   int width, acc_t gamma, const CudaPoolArgs& a) {
  const int bins = a.pooled_h * a.pooled_w;
  const int ph = bin / a.pooled_w, pw = bin % a.pooled_w;
  acc_t dx, dy;
  bin_shift<acc_t, scalar_t>(g, offset != nullptr ? offset + r * 2 * bins : nullptr, bin, bins,
                             gamma, &dx, &dy);
  acc_t gbin = static_cast<acc_t>(grad[(r * channels + c) * bins + bin]) / g.count;
  if (mask != nullptr) gbin *= static_cast<acc_t>(mask[r * bins + bin]);
  int y0, y1, x0, x1;
  bin_band<acc_t>(g, ph, pw, dy, dx, height, width, &y0, &y1, &x0, &x1);
  for (int iy = y0; iy < y1; ++iy) {
    const AxisSample<acc_t> ay = axis_sample<acc_t>(height, sample_y<acc_t>(g, ph, dy, iy));
    if (!ay.valid) continue;
    for (int ix = x0; ix < x1; ++ix) {
      const AxisSample<acc_t> ax = axis_sample<acc_t>(width, sample_x<acc_t>(g, pw, dx, ix));
      if (!ax.valid) continue;
      int64_t pos[4];
      acc_t w[4];
      corner_offsets(ay, ax, width, pos);
      corner_weights(ay, ax, w);
      for (int corner = 0; corner < 4; ++corner) {
        if (Atomic) {
          gpuAtomicAdd(gp + pos[corner], w[corner] * gbin);
        } else {
          gp[pos[corner]] += w[corner] * gbin;
        }
      }
    }
  }
}

// grad_input, fast path: one thread per grad_output element, atomic adds (order not fixed).
template <typename scalar_t, typename acc_t>
__global__ void roi_pool_backward_input_kernel(int64_t total, const scalar_t* __restrict__ grad,
                                               const acc_t* __restrict__ rois,
                                               const scalar_t* __restrict__ offset,
                                               const scalar_t* __restrict__ mask,
                                               acc_t* __restrict__ grad_input, int64_t batch_size,
                                               int64_t channels, int height, int width, acc_t scale,
                                               acc_t gamma, CudaPoolArgs a) {
  const int bins = a.pooled_h * a.pooled_w;
  DETECTION_CUDA_KERNEL_LOOP(index, total) {
    const int bin = static_cast<int>(index % bins);
    const int64_t c = (index / bins) % channels;
    const int64_t r = index / bins / channels;
    const RoIGeometry<acc_t> g = roi_at<acc_t>(rois, r, scale, a, batch_size);
    if (g.batch < 0) continue;
    acc_t* gp = grad_input + (g.batch * channels + c) * height * width;
    scatter_bin<true, scalar_t, acc_t>(grad, rois, offset, mask, gp, g, r, c, bin, channels, height,
                                       width, gamma, a);
  }
}

// grad_input, deterministic path (torch.use_deterministic_algorithms): one thread per input
// plane (image, channel) visits the RoIs of its image and their bins in order with plain adds,
// so the summation order is fixed. Slower (parallel over N*C only), no atomics.
template <typename scalar_t, typename acc_t>
__global__ void roi_pool_backward_input_plane_kernel(
    int64_t planes, int64_t num_rois, const scalar_t* __restrict__ grad,
    const acc_t* __restrict__ rois, const scalar_t* __restrict__ offset,
    const scalar_t* __restrict__ mask, acc_t* __restrict__ grad_input, int64_t batch_size,
    int64_t channels, int height, int width, acc_t scale, acc_t gamma, CudaPoolArgs a) {
  const int bins = a.pooled_h * a.pooled_w;
  DETECTION_CUDA_KERNEL_LOOP(plane, planes) {
    const int64_t b = plane / channels, c = plane % channels;
    acc_t* gp = grad_input + plane * height * width;
    for (int64_t r = 0; r < num_rois; ++r) {
      const RoIGeometry<acc_t> g = roi_at<acc_t>(rois, r, scale, a, batch_size);
      if (g.batch != b) continue;
      for (int bin = 0; bin < bins; ++bin) {
        scatter_bin<false, scalar_t, acc_t>(grad, rois, offset, mask, gp, g, r, c, bin, channels,
                                            height, width, gamma, a);
      }
    }
  }
}

// Launches the grad_input scatter into the zeroed acc_t buffer grad_input [N, C, H, W]: the
// plane-serial kernel when deterministic algorithms are requested, the atomic one otherwise.
template <typename scalar_t, typename acc_t>
void launch_backward_input(cudaStream_t stream, int64_t num_rois, const scalar_t* grad,
                           const acc_t* rois, const scalar_t* offset, const scalar_t* mask,
                           acc_t* grad_input, int64_t batch_size, int64_t channels, int height,
                           int width, acc_t scale, acc_t gamma, const CudaPoolArgs& a) {
  if (at::globalContext().deterministicAlgorithms()) {
    const int64_t planes = batch_size * channels;
    cuda::launch(roi_pool_backward_input_plane_kernel<scalar_t, acc_t>, blocks_for(planes),
                 kThreads, 0, stream, planes, num_rois, grad, rois, offset, mask, grad_input,
                 batch_size, channels, height, width, scale, gamma, a);
  } else {
    const int64_t total = num_rois * channels * a.pooled_h * a.pooled_w;
    cuda::launch(roi_pool_backward_input_kernel<scalar_t, acc_t>, blocks_for(total), kThreads, 0,
                 stream, total, grad, rois, offset, mask, grad_input, batch_size, channels, height,
                 width, scale, gamma, a);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t>
__global__ void roi_pool_backward_offset_mask_kernel(
    int64_t total, const scalar_t* __restrict__ grad, const scalar_t* __restrict__ input,
    const acc_t* __restrict__ rois, const scalar_t* __restrict__ offset,
    const scalar_t* __restrict__ mask, scalar_t* __restrict__ grad_offset,
    scalar_t* __restrict__ grad_mask, int64_t batch_size, int64_t channels, int height, int width,
    acc_t scale, acc_t gamma, CudaPoolArgs a) {
  const int bins = a.pooled_h * a.pooled_w;
  DETECTION_CUDA_KERNEL_LOOP(index, total) {  // index = r * bins + bin
    const int bin = static_cast<int>(index % bins);
    const int64_t r = index / bins;
    const int ph = bin / a.pooled_w, pw = bin % a.pooled_w;
    const RoIGeometry<acc_t> g = roi_at<acc_t>(rois, r, scale, a, batch_size);
    acc_t sum_gx = 0, sum_gy = 0, sum_gm = 0;
    if (g.batch >= 0) {
      acc_t dx, dy;
      bin_shift<acc_t, scalar_t>(g, offset != nullptr ? offset + r * 2 * bins : nullptr, bin, bins,
                                 gamma, &dx, &dy);
      int y0, y1, x0, x1;
      bin_band<acc_t>(g, ph, pw, dy, dx, height, width, &y0, &y1, &x0, &x1);
      for (int64_t c = 0; c < channels; ++c) {
        const scalar_t* plane = input + (g.batch * channels + c) * height * width;
        const acc_t go = static_cast<acc_t>(grad[(r * channels + c) * bins + bin]);
        acc_t val = 0, vx = 0, vy = 0;
        for (int iy = y0; iy < y1; ++iy) {
          const AxisSample<acc_t> ay = axis_sample<acc_t>(height, sample_y<acc_t>(g, ph, dy, iy));
          for (int ix = x0; ix < x1; ++ix) {
            const AxisSample<acc_t> ax = axis_sample<acc_t>(width, sample_x<acc_t>(g, pw, dx, ix));
            acc_t v, gx, gy;
            sample_with_grad_xy<acc_t, scalar_t>(plane, width, ay, ax, &v, &gx, &gy);
            val += v;
            vx += gx;
            vy += gy;
          }
        }
        sum_gm += go * (val / g.count);
        sum_gx += go * vx;
        sum_gy += go * vy;
      }
    }
    if (grad_mask != nullptr) grad_mask[index] = static_cast<scalar_t>(sum_gm);
    if (grad_offset != nullptr) {
      const acc_t m = mask != nullptr ? static_cast<acc_t>(mask[index]) : static_cast<acc_t>(1);
      acc_t gx, gy;
      offset_gradient(g, gamma, m, sum_gx, sum_gy, &gx, &gy);
      grad_offset[r * 2 * bins + bin] = static_cast<scalar_t>(gx);
      grad_offset[r * 2 * bins + bins + bin] = static_cast<scalar_t>(gy);
    }
  }
}

}  // namespace roi
}  // namespace detection
