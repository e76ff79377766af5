// CPU kernels of the modulated deformable convolution (DCNv2; DCNv1 when mask is None).
//
// Per chunk of at most im2col_step images (also capped so the column buffer stays below
// kMaxColumnBytes; results do not depend on the chunking):
//  1. the input is copied zero-padded to planes of (H + 3) x (W + 2): one pixel on every side
//     (the "zero-padded bilinear" of the convention) plus one extra row at the bottom, so that
//     rows H + 1, H + 2 x columns 0, 1 form an all-zero 2x2 block;
//  2. a sampling plan is built once per (image, deform group, kernel point, output position):
//     the flat index of the top-left corner in the padded plane, the fractional parts ly, lx and
//     the mask. Samples outside the band -1 < y < H, -1 < x < W (and NaN / huge offsets) point
//     at the zero block with ly = lx = 0, so every inner loop is branch-free and in bounds;
//  3. deformable im2col into columns [B, C*K, Ho*Wo] and one GEMM per (image, conv group).
// Backward recomputes the columns for grad_weight, then grad_columns = W^T grad_output, and one
// sweep over grad_columns does both the col2im (into padded grad planes) and the offset/mask
// gradients. The sampling passes run over tasks (image, deform group, chunk of kChannelChunk
// channels), each (kernel point, block of positions) expanding the plan to corner weights once
// for the chunk's channels. A task owns its channels' grad planes (no atomics) and writes its
// partial sums over channels of the coordinate gradients; the chunks are then summed in a fixed
// order. The chunking never depends on the thread count, so every result is bit-identical
// across runs and thread counts (the deterministic mode needs nothing else on CPU).
// Accumulation is in the input dtype (float32 or float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "deform_conv/deform_conv_common.h"
#include "deform_conv/deform_conv_math.h"

namespace detection {
namespace deform_conv {
namespace {

constexpr int64_t kMaxColumnBytes = int64_t(256) << 20;
// Smallest amount of inner-loop work (sample evaluations) worth handing to another thread.
constexpr int64_t kMinParallelWork = int64_t(1) << 14;

// at::parallel_for grain size: how many tasks of `work` evaluations each make one chunk.
int64_t grain(int64_t work) {
  return std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(1, work));
}

struct Geometry {
  int64_t channels, height, width, deform_groups, kernel_h, kernel_w, out_h, out_w;
  int64_t kk() const { return kernel_h * kernel_w; }
  int64_t positions() const { return out_h * out_w; }
  int64_t padded_w() const { return width + 2; }
  int64_t padded_plane() const { return (height + 3) * (width + 2); }
  int64_t zero_block() const { return (height + 1) * (width + 2); }
};

Geometry geometry(const ConvShape& s, const ConvParams& p) {
  return Geometry{s.channels, s.height,   s.width, p.deform_groups,
                  s.kernel_h, s.kernel_w, s.out_h, s.out_w};
}

// Builds the sampling plan of B images: rows r = (b * dg + g) * K + k, each of Ho*Wo entries.
template <typename scalar_t>
void make_plan(const scalar_t* offset, const scalar_t* mask, int64_t batch, const Geometry& geo,
               const ConvParams& p, int32_t* index, scalar_t* frac_y, scalar_t* frac_x,
               scalar_t* plan_mask) {
  const int64_t K = geo.kk(), P = geo.positions(), Wp = geo.padded_w();
  const int32_t zero = static_cast<int32_t>(geo.zero_block());
  at::parallel_for(0, batch * geo.deform_groups * K, grain(P), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t k = r % K;
      const int64_t i = k / geo.kernel_w, j = k % geo.kernel_w;
      const scalar_t* off_y = offset + 2 * r * P;
      const scalar_t* off_x = off_y + P;
      const scalar_t* msk = mask != nullptr ? mask + r * P : nullptr;
      int32_t* idx = index + r * P;
      scalar_t* fy = frac_y + r * P;
      scalar_t* fx = frac_x + r * P;
      scalar_t* pm = plan_mask + r * P;
      for (int64_t ho = 0; ho < geo.out_h; ++ho) {
        const scalar_t y0 = static_cast<scalar_t>(ho * p.stride_h - p.pad_h + i * p.dilation_h);
        for (int64_t wo = 0; wo < geo.out_w; ++wo) {
          const int64_t q = ho * geo.out_w + wo;
          const scalar_t x0 = static_cast<scalar_t>(wo * p.stride_w - p.pad_w + j * p.dilation_w);
          int64_t y_low, x_low;
          scalar_t ly, lx;
          if (locate<scalar_t>(y0 + off_y[q], x0 + off_x[q], geo.height, geo.width, y_low, x_low,
                               ly, lx)) {
            idx[q] = static_cast<int32_t>((y_low + 1) * Wp + (x_low + 1));
            fy[q] = ly;
            fx[q] = lx;
          } else {
            idx[q] = zero;
            fy[q] = scalar_t(0);
            fx[q] = scalar_t(0);
          }
          pm[q] = msk != nullptr ? msk[q] : scalar_t(1);
        }
      }
    }
  });
}

// Channels per task of the sampling passes. Fixed (never derived from the thread count), so the
// chunked sums of the coordinate gradients are the same whatever the number of threads.
constexpr int64_t kChannelChunk = 16;
// Output positions per block: the block's bilinear weights stay in L1 while the chunk's
// channels reuse them.
constexpr int64_t kBlock = 256;

// Channel chunks of one deformable group.
int64_t chunks_per_group(const Geometry& geo) {
  const int64_t cpg = geo.channels / geo.deform_groups;
  return (cpg + kChannelChunk - 1) / kChannelChunk;
}

// One block of the sampling plan expanded to corner weights (mask folded in) for the inner loops.
template <typename scalar_t>
struct BlockWeights {
  int32_t idx[kBlock];
  scalar_t w00[kBlock], w01[kBlock], w10[kBlock], w11[kBlock];

  void load(const int32_t* index, const scalar_t* frac_y, const scalar_t* frac_x,
            const scalar_t* plan_mask, int64_t n) {
    for (int64_t q = 0; q < n; ++q) {
      const scalar_t ly = frac_y[q], lx = frac_x[q], m = plan_mask[q];
      const scalar_t hy = scalar_t(1) - ly, hx = scalar_t(1) - lx;
      idx[q] = index[q];
      w00[q] = m * (hy * hx);
      w01[q] = m * (hy * lx);
      w10[q] = m * (ly * hx);
      w11[q] = m * (ly * lx);
    }
  }
};

// columns[b, c*K + k, q] = mask * bilinear(input[b, c], sample(b, g(c), k, q)).
// Tasks: (image, deform group, channel chunk); within a task, (kernel point, position block)
// outermost so the block's weights are computed once and reused by the chunk's channels.
template <typename scalar_t>
void im2col(const scalar_t* padded, const int32_t* index, const scalar_t* frac_y,
            const scalar_t* frac_x, const scalar_t* plan_mask, int64_t batch, const Geometry& geo,
            scalar_t* columns) {
  const int64_t C = geo.channels, K = geo.kk(), P = geo.positions(), Wp = geo.padded_w();
  const int64_t plane = geo.padded_plane(), cpg = C / geo.deform_groups;
  const int64_t nch = chunks_per_group(geo), dg = geo.deform_groups;
  at::parallel_for(0, batch * dg * nch, grain(kChannelChunk * K * P), [&](int64_t begin,
                                                                          int64_t end) {
    BlockWeights<scalar_t> bw;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bg = t / nch, chunk = t % nch;
      const int64_t b = bg / dg, g = bg % dg;
      const int64_t c0 = g * cpg + chunk * kChannelChunk;
      const int64_t c1 = std::min(c0 + kChannelChunk, (g + 1) * cpg);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = bg * K + k;
        for (int64_t q0 = 0; q0 < P; q0 += kBlock) {
          const int64_t n = std::min(kBlock, P - q0);
          bw.load(index + r * P + q0, frac_y + r * P + q0, frac_x + r * P + q0,
                  plan_mask + r * P + q0, n);
          for (int64_t c = c0; c < c1; ++c) {
            const scalar_t* __restrict__ src = padded + (b * C + c) * plane;
            scalar_t* __restrict__ out = columns + ((b * C + c) * K + k) * P + q0;
            for (int64_t q = 0; q < n; ++q) {
              const scalar_t* v = src + bw.idx[q];
              out[q] = (bw.w00[q] * v[0] + bw.w01[q] * v[1]) +
                       (bw.w10[q] * v[Wp] + bw.w11[q] * v[Wp + 1]);
            }
          }
        }
      }
    }
  });
}

// The whole backward sampling pass in one sweep over grad_columns: the transpose of im2col
// into zero-initialised padded planes (grad_padded) and the coordinate/mask gradients.
// Tasks: (image, deform group, channel chunk). A task owns its chunk's grad planes (no atomics)
// and writes the chunk's partial sums over channels of d/dy, d/dx and the unmasked sample into
// partial[t, k, 0..2, q]; `reduce_coordinate_grad` then sums the chunks in a fixed order.
// Nothing depends on the thread count, so the result is bit-identical for any number of threads.
template <typename scalar_t>
void col2im_coordinate(const scalar_t* grad_columns, const scalar_t* padded, const int32_t* index,
                       const scalar_t* frac_y, const scalar_t* frac_x, const scalar_t* plan_mask,
                       int64_t batch, const Geometry& geo, scalar_t* grad_padded,
                       scalar_t* partial) {
  const int64_t C = geo.channels, K = geo.kk(), P = geo.positions(), Wp = geo.padded_w();
  const int64_t plane = geo.padded_plane(), cpg = C / geo.deform_groups;
  const int64_t nch = chunks_per_group(geo), dg = geo.deform_groups;
  at::parallel_for(0, batch * dg * nch, grain(kChannelChunk * K * P), [&](int64_t begin,
                                                                          int64_t end) {
    BlockWeights<scalar_t> bw;
    scalar_t acc_y[kBlock], acc_x[kBlock], acc_v[kBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bg = t / nch, chunk = t % nch;
      const int64_t b = bg / dg, g = bg % dg;
      const int64_t c0 = g * cpg + chunk * kChannelChunk;
      const int64_t c1 = std::min(c0 + kChannelChunk, (g + 1) * cpg);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = bg * K + k;
        const scalar_t* fy = frac_y + r * P;
        const scalar_t* fx = frac_x + r * P;
        scalar_t* part = partial + (t * K + k) * 3 * P;
        for (int64_t q0 = 0; q0 < P; q0 += kBlock) {
          const int64_t n = std::min(kBlock, P - q0);
          bw.load(index + r * P + q0, fy + q0, fx + q0, plan_mask + r * P + q0, n);
          std::fill(acc_y, acc_y + n, scalar_t(0));
          std::fill(acc_x, acc_x + n, scalar_t(0));
          std::fill(acc_v, acc_v + n, scalar_t(0));
          for (int64_t c = c0; c < c1; ++c) {
            const scalar_t* __restrict__ src = padded + (b * C + c) * plane;
            scalar_t* __restrict__ dst = grad_padded + (b * C + c) * plane;
            const scalar_t* __restrict__ gc = grad_columns + ((b * C + c) * K + k) * P + q0;
            for (int64_t q = 0; q < n; ++q) {
              const int32_t o = bw.idx[q];
              const scalar_t* v = src + o;
              scalar_t* d = dst + o;
              const scalar_t ly = fy[q0 + q], lx = fx[q0 + q];
              const scalar_t hy = scalar_t(1) - ly, hx = scalar_t(1) - lx;
              const scalar_t v00 = v[0], v01 = v[1], v10 = v[Wp], v11 = v[Wp + 1];
              const scalar_t gq = gc[q];
              d[0] += bw.w00[q] * gq;
              d[1] += bw.w01[q] * gq;
              d[Wp] += bw.w10[q] * gq;
              d[Wp + 1] += bw.w11[q] * gq;
              acc_y[q] += gq * (hx * (v10 - v00) + lx * (v11 - v01));
              acc_x[q] += gq * (hy * (v01 - v00) + ly * (v11 - v10));
              acc_v[q] += gq * (hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11));
            }
          }
          std::copy(acc_y, acc_y + n, part + q0);
          std::copy(acc_x, acc_x + n, part + P + q0);
          std::copy(acc_v, acc_v + n, part + 2 * P + q0);
        }
      }
    }
  });
}

// grad_offset / grad_mask rows r = (b, g, k) from the chunk partials, chunks summed in order.
template <typename scalar_t>
void reduce_coordinate_grad(const scalar_t* partial, const scalar_t* plan_mask, int64_t batch,
                            const Geometry& geo, scalar_t* grad_offset, scalar_t* grad_mask) {
  const int64_t K = geo.kk(), P = geo.positions(), nch = chunks_per_group(geo);
  at::parallel_for(0, batch * geo.deform_groups * K, grain(3 * nch * P), [&](int64_t begin,
                                                                             int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t bg = r / K, k = r % K;
      const scalar_t* pm = plan_mask + r * P;
      scalar_t* go_y = grad_offset + 2 * r * P;
      scalar_t* go_x = go_y + P;
      scalar_t* gm = grad_mask != nullptr ? grad_mask + r * P : nullptr;
      for (int64_t q = 0; q < P; ++q) {
        scalar_t sy = 0, sx = 0, sv = 0;
        for (int64_t ch = 0; ch < nch; ++ch) {
          const scalar_t* part = partial + ((bg * nch + ch) * K + k) * 3 * P;
          sy += part[q];
          sx += part[P + q];
          sv += part[2 * P + q];
        }
        go_y[q] = pm[q] * sy;
        go_x[q] = pm[q] * sx;
        if (gm != nullptr) gm[q] = sv;
      }
    }
  });
}

ConvParams make_params(int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       int64_t dilation_h, int64_t dilation_w, int64_t groups,
                       int64_t deform_groups, int64_t im2col_step) {
  return ConvParams{stride_h,   stride_w, pad_h,         pad_w,      dilation_h,
                    dilation_w, groups,   deform_groups, im2col_step};
}

void check_cpu(const at::Tensor& input, const ConvShape& s) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "modulated_deform_conv2d: the CPU kernel supports float32 and float64 input, got ",
              input.scalar_type(), " (under CPU autocast the op runs in float32)");
  TORCH_CHECK((s.height + 3) * (s.width + 2) < std::numeric_limits<int32_t>::max(),
              "modulated_deform_conv2d: input plane too large (", s.height, "x", s.width, ")");
}

// Images per chunk: at most im2col_step, and few enough that the columns stay bounded.
int64_t chunk_size(const ConvShape& s, const ConvParams& p, int64_t element_size) {
  const int64_t per_image =
      std::max<int64_t>(1, s.channels * s.kernel_h * s.kernel_w * s.out_h * s.out_w * element_size);
  return std::max<int64_t>(1, std::min<int64_t>(p.im2col_step, kMaxColumnBytes / per_image));
}

// The per-chunk state: padded input, sampling plan, columns.
struct Chunk {
  at::Tensor padded, index, frac_y, frac_x, mask, columns;
};

Chunk prepare_chunk(const at::Tensor& input, const at::Tensor& offset,
                    const std::optional<at::Tensor>& mask, int64_t b0, int64_t batch,
                    const Geometry& geo, const ConvParams& p) {
  Chunk ch;
  // pad (left, right, top, bottom) = (1, 1, 1, 2)
  ch.padded = at::constant_pad_nd(input.narrow(0, b0, batch), {1, 1, 1, 2}, 0).contiguous();
  const int64_t rows = batch * geo.deform_groups * geo.kk();
  ch.index = at::empty({rows, geo.positions()}, input.options().dtype(at::kInt));
  ch.frac_y = at::empty({rows, geo.positions()}, input.options());
  ch.frac_x = at::empty_like(ch.frac_y);
  ch.mask = at::empty_like(ch.frac_y);
  ch.columns = at::empty({batch, geo.channels * geo.kk(), geo.positions()}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_plan", [&] {
    const scalar_t* mask_ptr =
        mask.has_value()
            ? mask->data_ptr<scalar_t>() + b0 * geo.deform_groups * geo.kk() * geo.positions()
            : nullptr;
    make_plan<scalar_t>(
        offset.data_ptr<scalar_t>() + b0 * 2 * geo.deform_groups * geo.kk() * geo.positions(),
        mask_ptr, batch, geo, p, ch.index.data_ptr<int32_t>(), ch.frac_y.data_ptr<scalar_t>(),
        ch.frac_x.data_ptr<scalar_t>(), ch.mask.data_ptr<scalar_t>());
    im2col<scalar_t>(ch.padded.data_ptr<scalar_t>(), ch.index.data_ptr<int32_t>(),
                     ch.frac_y.data_ptr<scalar_t>(), ch.frac_x.data_ptr<scalar_t>(),
                     ch.mask.data_ptr<scalar_t>(), batch, geo, ch.columns.data_ptr<scalar_t>());
  });
  return ch;
}

at::Tensor forward_cpu(const at::Tensor& input_, const at::Tensor& offset_,
                       const std::optional<at::Tensor>& mask_, const at::Tensor& weight_,
                       const std::optional<at::Tensor>& bias_, int64_t stride_h, int64_t stride_w,
                       int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                       int64_t groups, int64_t deform_groups, int64_t im2col_step) {
  const ConvParams p = make_params(stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
                                   deform_groups, im2col_step);
  const ConvShape s = check_args(input_, offset_, mask_, weight_, bias_, p);
  check_cpu(input_, s);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  at::Tensor output = at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, input.options());
  if (s.batch == 0) return output;

  const Geometry geo = geometry(s, p);
  const int64_t G = p.groups, P = geo.positions();
  const int64_t cout_g = s.out_channels / G, ck_g = s.channels / G * geo.kk();
  const at::Tensor w = weight.view({G, cout_g, ck_g});
  const int64_t chunk = chunk_size(s, p, input.element_size());
  for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
    const int64_t batch = std::min(chunk, s.batch - b0);
    const Chunk ch = prepare_chunk(input, offset, mask, b0, batch, geo, p);
    for (int64_t b = 0; b < batch; ++b) {
      const at::Tensor out_b = output[b0 + b].view({G, cout_g, P});
      const at::Tensor col_b = ch.columns[b].view({G, ck_g, P});
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor out_bg = out_b[g];
        at::mm_out(out_bg, w[g], col_b[g]);
      }
    }
  }
  if (bias_.has_value()) output.add_(bias_->view({1, -1, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_,
    const std::optional<at::Tensor>& mask_, const at::Tensor& weight_,
    const std::optional<at::Tensor>& bias_, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t groups, int64_t deform_groups,
    int64_t im2col_step) {
  const ConvParams p = make_params(stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
                                   deform_groups, im2col_step);
  const ConvShape s = check_args(input_, offset_, mask_, weight_, bias_, p, &grad_output_);
  check_cpu(input_, s);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor weight = weight_.contiguous(), grad_output = grad_output_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();

  at::Tensor grad_input = at::empty_like(input, at::MemoryFormat::Contiguous);
  at::Tensor grad_offset = at::empty_like(offset, at::MemoryFormat::Contiguous);
  at::Tensor grad_mask = mask.has_value() ? at::empty_like(*mask, at::MemoryFormat::Contiguous)
                                          : at::empty({0}, input.options());
  at::Tensor grad_weight = at::zeros_like(weight, at::MemoryFormat::Contiguous);
  at::Tensor grad_bias =
      bias_.has_value() ? grad_output.sum({0, 2, 3}) : at::empty({0}, input.options());
  if (s.batch == 0) return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};

  const Geometry geo = geometry(s, p);
  const int64_t G = p.groups, P = geo.positions();
  const int64_t cout_g = s.out_channels / G, ck_g = s.channels / G * geo.kk();
  const at::Tensor w = weight.view({G, cout_g, ck_g});
  const at::Tensor gw = grad_weight.view({G, cout_g, ck_g});
  const int64_t chunk = chunk_size(s, p, input.element_size());
  for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
    const int64_t batch = std::min(chunk, s.batch - b0);
    Chunk ch = prepare_chunk(input, offset, mask, b0, batch, geo, p);
    // grad_weight += grad_output x columns^T, then the columns become grad_columns.
    for (int64_t b = 0; b < batch; ++b) {
      const at::Tensor go_b = grad_output[b0 + b].view({G, cout_g, P});
      const at::Tensor col_b = ch.columns[b].view({G, ck_g, P});
      for (int64_t g = 0; g < G; ++g) {
        gw[g].addmm_(go_b[g], col_b[g].t());
        at::Tensor col_bg = col_b[g];
        at::mm_out(col_bg, w[g].t(), go_b[g]);
      }
    }
    at::Tensor grad_padded = at::zeros_like(ch.padded);
    at::Tensor partial = at::empty(
        {batch * geo.deform_groups * chunks_per_group(geo), geo.kk(), 3, P}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_backward", [&] {
      col2im_coordinate<scalar_t>(
          ch.columns.data_ptr<scalar_t>(), ch.padded.data_ptr<scalar_t>(),
          ch.index.data_ptr<int32_t>(), ch.frac_y.data_ptr<scalar_t>(),
          ch.frac_x.data_ptr<scalar_t>(), ch.mask.data_ptr<scalar_t>(), batch, geo,
          grad_padded.data_ptr<scalar_t>(), partial.data_ptr<scalar_t>());
      const int64_t rows_before = b0 * geo.deform_groups * geo.kk() * P;
      reduce_coordinate_grad<scalar_t>(
          partial.data_ptr<scalar_t>(), ch.mask.data_ptr<scalar_t>(), batch, geo,
          grad_offset.data_ptr<scalar_t>() + 2 * rows_before,
          mask.has_value() ? grad_mask.data_ptr<scalar_t>() + rows_before : nullptr);
    });
    grad_input.narrow(0, b0, batch)
        .copy_(grad_padded.slice(2, 1, s.height + 1).slice(3, 1, s.width + 1));
  }
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace
}  // namespace deform_conv
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("modulated_deform_conv2d", TORCH_FN(detection::deform_conv::forward_cpu));
  m.impl("_modulated_deform_conv2d_backward", TORCH_FN(detection::deform_conv::backward_cpu));
}
