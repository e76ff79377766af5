// CPU kernels of the modulated deformable convolution (DCNv2; DCNv1 when mask is None).
//
// Per image:
//  1. the input is copied channels-last and zero-padded to [H + 3, W + 2, C]: one pixel on
//     every side (the "zero-padded bilinear" of the convention) plus one extra row at the bottom,
//     so that rows H + 1, H + 2 x columns 0, 1 form an all-zero 2x2 block of pixels;
//  2. a sampling plan is built once per (deform group, kernel point, output position): the
//     top-left corner's pixel index in the padded plane, the fractional parts ly, lx and the
//     mask. Samples outside the band -1 < y < H, -1 < x < W (and NaN / huge offsets) point at the
//     zero block with ly = lx = 0, so every inner loop is branch-free and in bounds;
//  3. channels-last deformable im2col into columns [positions, K*C] (per position: conv group,
//     kernel point, channel), whose inner loop runs over contiguous channels (SIMD, no gathers),
//     against the weight permuted to the same order.
// Forward: one parallel region over (image, tile of positions); each thread samples a tile into
// a cache-sized buffer and multiplies it right away, so the columns never travel to memory.
// Backward, per image: the columns [P, K*C]; grad_weight += grad_output x columns and
// grad_columns = grad_output^T x W (multi-threaded GEMMs, no copies); then one sweep over
// grad_columns does both the col2im (into a padded channels-last grad) and the offset/mask
// gradients. Its tasks are chunks of kChannelChunk channels: a task owns its channels of every
// grad pixel (no atomics) and visits positions in a fixed order, and writes its partial sums over
// channels of the coordinate gradients; the chunks are then summed in a fixed order. Nothing
// depends on the thread count, so the sampling results are bit-identical across runs and thread
// counts (the deterministic mode needs nothing else on CPU). im2col_step is checked but does not
// matter on CPU (the column buffer is bounded by the tile / one image). Accumulation is in the
// input dtype (float32 or float64).
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

// Channels per task of the backward sweep. Fixed (never derived from the thread count), so the
// chunked sums of the coordinate gradients are the same whatever the number of threads.
constexpr int64_t kChannelChunk = 32;

// A run of channels [c_lo, c_hi) inside one conv group and one deformable group. Column layout
// (per image and position, KC = K*C entries): conv group gc, then kernel point k, then the
// group's channel: column(c, k) = gc*K*Cg + k*Cg + (c - gc*Cg); a segment's channels are
// contiguous there and in the channels-last input, so the inner loops run over channels.
struct Segment {
  int64_t c_lo, c_hi, deform_group, column;  // column: column(c_lo, 0)
};

std::vector<Segment> segments(const Geometry& geo, int64_t groups) {
  const int64_t C = geo.channels, K = geo.kk(), Cg = C / groups, cpg = C / geo.deform_groups;
  std::vector<Segment> segs;
  for (int64_t c = 0; c < C;) {
    const int64_t gc = c / Cg, g = c / cpg;
    const int64_t end = std::min((gc + 1) * Cg, (g + 1) * cpg);
    segs.push_back(Segment{c, end, g, gc * K * Cg + (c - gc * Cg)});
    c = end;
  }
  return segs;
}

// The backward sweep's tasks per image: each segment cut into runs of at most kChannelChunk.
std::vector<Segment> channel_chunks(const std::vector<Segment>& segs) {
  std::vector<Segment> chunks;
  for (const Segment& s : segs) {
    for (int64_t c = s.c_lo; c < s.c_hi; c += kChannelChunk) {
      chunks.push_back(Segment{c, std::min(c + kChannelChunk, s.c_hi), s.deform_group,
                               s.column + (c - s.c_lo)});
    }
  }
  return chunks;
}

// Channels-last im2col of positions [q0, q0 + T) of one image:
// columns[q - q0, column(c, k)] = mask * bilinear(input[:, :, c], sample(g(c), k, q)) from the
// padded channels-last image [H+3, W+2, C]; parallel over positions.
template <typename scalar_t>
void im2col(const scalar_t* padded, const int32_t* index, const scalar_t* frac_y,
            const scalar_t* frac_x, const scalar_t* plan_mask, const Geometry& geo, int64_t groups,
            const std::vector<Segment>& segs, int64_t q0, int64_t T, scalar_t* columns) {
  const int64_t C = geo.channels, K = geo.kk(), P = geo.positions(), Wp = geo.padded_w();
  const int64_t KC = K * C, Cg = C / groups;
  at::parallel_for(q0, q0 + T, grain(KC), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      scalar_t* row = columns + (q - q0) * KC;
      for (const Segment& s : segs) {
        const int64_t n = s.c_hi - s.c_lo;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t e = (s.deform_group * K + k) * P + q;
          const scalar_t ly = frac_y[e], lx = frac_x[e], m = plan_mask[e];
          const scalar_t hy = scalar_t(1) - ly, hx = scalar_t(1) - lx;
          const scalar_t w00 = m * (hy * hx), w01 = m * (hy * lx);
          const scalar_t w10 = m * (ly * hx), w11 = m * (ly * lx);
          const scalar_t* v0 = padded + int64_t(index[e]) * C + s.c_lo;
          const scalar_t* v1 = v0 + C;
          const scalar_t* v2 = v0 + Wp * C;
          const scalar_t* v3 = v2 + C;
          scalar_t* out = row + s.column + k * Cg;
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) {
            out[c] = (w00 * v0[c] + w01 * v1[c]) + (w10 * v2[c] + w11 * v3[c]);
          }
        }
      }
    }
  });
}

// The backward sampling pass of positions [q0, q0 + T) of one image in one sweep over their
// grad_columns [T, K*C]: the transpose of im2col into the zero-initialised padded channels-last
// grad_padded, and the coordinate/mask gradients. Tasks: channel chunks. A task owns its chunk's
// channels of every grad pixel and visits positions and kernel points in order (no atomics), and
// writes its chunk's partial sums over channels of d/dy, d/dx and the unmasked sample to
// partial[chunk, k, 0..2, q]; `reduce_coordinate_grad` then sums the chunks in order. Nothing
// depends on the thread count, so the result is bit-identical for any number of threads.
template <typename scalar_t>
void col2im_coordinate(const scalar_t* grad_columns, const scalar_t* padded, const int32_t* index,
                       const scalar_t* frac_y, const scalar_t* frac_x, const scalar_t* plan_mask,
                       const Geometry& geo, int64_t groups, const std::vector<Segment>& chunks,
                       int64_t q0, int64_t T, scalar_t* grad_padded, scalar_t* partial) {
  const int64_t C = geo.channels, K = geo.kk(), P = geo.positions(), Wp = geo.padded_w();
  const int64_t KC = K * C, Cg = C / groups, nch = static_cast<int64_t>(chunks.size());
  at::parallel_for(0, nch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const Segment& s = chunks[j];
      const int64_t n = s.c_hi - s.c_lo;
      const scalar_t* img = padded + s.c_lo;
      scalar_t* gimg = grad_padded + s.c_lo;
      scalar_t* part = partial + j * K * 3 * P;
      for (int64_t q = q0; q < q0 + T; ++q) {
        const scalar_t* grow = grad_columns + (q - q0) * KC + s.column;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t e = (s.deform_group * K + k) * P + q;
          const scalar_t ly = frac_y[e], lx = frac_x[e], m = plan_mask[e];
          const scalar_t hy = scalar_t(1) - ly, hx = scalar_t(1) - lx;
          const scalar_t w00 = m * (hy * hx), w01 = m * (hy * lx);
          const scalar_t w10 = m * (ly * hx), w11 = m * (ly * lx);
          const int64_t o = int64_t(index[e]) * C;
          const scalar_t* v0 = img + o;
          const scalar_t* v1 = v0 + C;
          const scalar_t* v2 = v0 + Wp * C;
          const scalar_t* v3 = v2 + C;
          scalar_t* d0 = gimg + o;
          scalar_t* d1 = d0 + C;
          scalar_t* d2 = d0 + Wp * C;
          scalar_t* d3 = d2 + C;
          const scalar_t* gc = grow + k * Cg;
          scalar_t sy = 0, sx = 0, sv = 0;
#pragma omp simd reduction(+ : sy, sx, sv)
          for (int64_t c = 0; c < n; ++c) {
            const scalar_t g = gc[c];
            const scalar_t a00 = v0[c], a01 = v1[c], a10 = v2[c], a11 = v3[c];
            d0[c] += w00 * g;
            d1[c] += w01 * g;
            d2[c] += w10 * g;
            d3[c] += w11 * g;
            sy += g * (hx * (a10 - a00) + lx * (a11 - a01));
            sx += g * (hy * (a01 - a00) + ly * (a11 - a10));
            sv += g * (hy * (hx * a00 + lx * a01) + ly * (hx * a10 + lx * a11));
          }
          part[(k * 3) * P + q] = sy;
          part[(k * 3 + 1) * P + q] = sx;
          part[(k * 3 + 2) * P + q] = sv;
        }
      }
    }
  });
}

// grad_offset / grad_mask rows r = (g, k) of one image from the chunk partials, summed in order.
template <typename scalar_t>
void reduce_coordinate_grad(const scalar_t* partial, const scalar_t* plan_mask, const Geometry& geo,
                            const std::vector<Segment>& chunks, scalar_t* grad_offset,
                            scalar_t* grad_mask) {
  const int64_t K = geo.kk(), P = geo.positions();
  const int64_t nch = static_cast<int64_t>(chunks.size());
  at::parallel_for(0, geo.deform_groups * K, grain(3 * P), [&](int64_t begin, int64_t end) {
    std::vector<const scalar_t*> parts;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t g = r / K, k = r % K;
      parts.clear();
      for (int64_t j = 0; j < nch; ++j) {
        if (chunks[j].deform_group == g) parts.push_back(partial + (j * K + k) * 3 * P);
      }
      const scalar_t* pm = plan_mask + r * P;
      scalar_t* go_y = grad_offset + 2 * r * P;
      scalar_t* go_x = go_y + P;
      scalar_t* gm = grad_mask != nullptr ? grad_mask + r * P : nullptr;
      for (int64_t q = 0; q < P; ++q) {
        scalar_t sy = 0, sx = 0, sv = 0;
        for (const scalar_t* part : parts) {
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

// Positions per tile: the tile's columns [T, K*C] (about kTileBytes) stay in cache between
// the sampling pass and the GEMMs. Depends on the shape only (never on the thread count).
constexpr int64_t kTileBytes = int64_t(2) << 20;

int64_t tile_size(const Geometry& geo, int64_t element_size) {
  const int64_t per_position = geo.kk() * geo.channels * element_size;
  const int64_t t = std::max<int64_t>(64, kTileBytes / std::max<int64_t>(1, per_position));
  return std::min<int64_t>(geo.positions(), t);
}

// One image's state: padded channels-last input and sampling plan (rows g * K + k).
struct Image {
  at::Tensor padded, index, frac_y, frac_x, mask;
};

Image prepare_image(const at::Tensor& input, const at::Tensor& offset,
                    const std::optional<at::Tensor>& mask, int64_t b, const Geometry& geo,
                    const ConvParams& p) {
  Image im;
  const int64_t H = geo.height, W = geo.width, C = geo.channels, P = geo.positions();
  // one zero pixel on every side plus one extra zero row at the bottom (the zero block)
  im.padded = at::zeros({H + 3, W + 2, C}, input.options());
  im.padded.narrow(0, 1, H).narrow(1, 1, W).copy_(input[b].permute({1, 2, 0}));
  const int64_t rows = geo.deform_groups * geo.kk();
  im.index = at::empty({rows, P}, input.options().dtype(at::kInt));
  im.frac_y = at::empty({rows, P}, input.options());
  im.frac_x = at::empty_like(im.frac_y);
  im.mask = at::empty_like(im.frac_y);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_plan", [&] {
    make_plan<scalar_t>(offset.data_ptr<scalar_t>() + b * 2 * rows * P,
                        mask.has_value() ? mask->data_ptr<scalar_t>() + b * rows * P : nullptr, 1,
                        geo, p, im.index.data_ptr<int32_t>(), im.frac_y.data_ptr<scalar_t>(),
                        im.frac_x.data_ptr<scalar_t>(), im.mask.data_ptr<scalar_t>());
  });
  return im;
}

// Fills columns[0:T] with the channels-last im2col of positions [q0, q0 + T).
void fill_columns(const Image& im, const Geometry& geo, int64_t groups,
                  const std::vector<Segment>& segs, int64_t q0, int64_t T, at::Tensor& columns) {
  AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "modulated_deform_conv2d_cpu_im2col", [&] {
    im2col<scalar_t>(im.padded.data_ptr<scalar_t>(), im.index.data_ptr<int32_t>(),
                     im.frac_y.data_ptr<scalar_t>(), im.frac_x.data_ptr<scalar_t>(),
                     im.mask.data_ptr<scalar_t>(), geo, groups, segs, q0, T,
                     columns.data_ptr<scalar_t>());
  });
}

// weight [Cout, Cg, kh, kw] -> [G, Cout/G, K*Cg] in the column order (k outer, channel inner).
at::Tensor weight_in_column_order(const at::Tensor& weight, int64_t G, int64_t K) {
  const int64_t cout_g = weight.size(0) / G, Cg = weight.size(1);
  return weight.reshape({G, cout_g, Cg, K}).permute({0, 1, 3, 2}).reshape({G, cout_g, K * Cg});
}

// The CPU kernels tile over output positions (tile_size) instead of chunking images: the column
// buffer is bounded by the tile, so im2col_step (checked, kept in the schema for the CUDA
// kernels) does not change the CPU results or memory.
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
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  at::Tensor output = at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, input.options());
  if (s.batch == 0) return output;

  const Geometry geo = geometry(s, p);
  const int64_t G = p.groups, P = geo.positions(), K = geo.kk();
  const int64_t cout_g = s.out_channels / G, ck_g = s.channels / G * K;
  // detached: the worker threads of the parallel region below do not inherit the dispatcher's
  // below-autograd state, and mm_out refuses inputs that require grad.
  const at::Tensor w = weight_in_column_order(weight_.detach(), G, K);
  const std::vector<Segment> segs = segments(geo, G);
  std::vector<Image> images;
  for (int64_t b = 0; b < s.batch; ++b) images.push_back(prepare_image(input, offset, mask, b, geo, p));
  // Tasks (image, tile of positions), one parallel region: each thread samples its tile into
  // its own cache-sized buffer and multiplies it (single-threaded BLAS inside the region).
  const int64_t tile = tile_size(geo, input.element_size());
  const int64_t tiles = (P + tile - 1) / tile;
  at::parallel_for(0, s.batch * tiles, 1, [&](int64_t begin, int64_t end) {
    at::Tensor columns = at::empty({tile, K * s.channels}, input.options());
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / tiles, q0 = (t % tiles) * tile, T = std::min(tile, P - q0);
      fill_columns(images[b], geo, G, segs, q0, T, columns);
      const at::Tensor col = columns.narrow(0, 0, T);
      const at::Tensor out_b = output[b].view({G, cout_g, P});
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor out_t = out_b[g].narrow(1, q0, T);
        at::mm_out(out_t, w[g], col.narrow(1, g * ck_g, ck_g).t());
      }
    }
  });
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
  const at::Tensor grad_output = grad_output_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();

  at::Tensor grad_input = at::empty_like(input, at::MemoryFormat::Contiguous);
  at::Tensor grad_offset = at::empty_like(offset, at::MemoryFormat::Contiguous);
  at::Tensor grad_mask = mask.has_value() ? at::empty_like(*mask, at::MemoryFormat::Contiguous)
                                          : at::empty({0}, input.options());
  at::Tensor grad_bias =
      bias_.has_value() ? grad_output.sum({0, 2, 3}) : at::empty({0}, input.options());
  if (s.batch == 0) {
    return {grad_input, grad_offset, grad_mask,
            at::zeros_like(weight_, at::MemoryFormat::Contiguous), grad_bias};
  }

  const Geometry geo = geometry(s, p);
  const int64_t G = p.groups, P = geo.positions(), K = geo.kk();
  const int64_t cout_g = s.out_channels / G, Cg = s.channels / G, ck_g = Cg * K;
  const int64_t rows = geo.deform_groups * K;
  const at::Tensor w = weight_in_column_order(weight_, G, K);
  at::Tensor gw = at::zeros({G, cout_g, ck_g}, input.options());
  const std::vector<Segment> segs = segments(geo, G);
  const std::vector<Segment> chunks = channel_chunks(segs);
  // One image at a time (the columns [P, K*C] of one image), with the multi-threaded GEMMs.
  at::Tensor columns = at::empty({P, K * s.channels}, input.options());
  at::Tensor partial =
      at::empty({static_cast<int64_t>(chunks.size()), K, 3, P}, input.options());
  for (int64_t b = 0; b < s.batch; ++b) {
    const Image im = prepare_image(input, offset, mask, b, geo, p);
    at::Tensor grad_padded = at::zeros_like(im.padded);
    const at::Tensor go_b = grad_output[b].view({G, cout_g, P});
    fill_columns(im, geo, G, segs, 0, P, columns);
    // grad_weight += grad_output x columns, then the columns become grad_columns.
    for (int64_t g = 0; g < G; ++g) {
      at::Tensor col_g = columns.narrow(1, g * ck_g, ck_g);
      gw[g].addmm_(go_b[g], col_g);
      if (G == 1) {
        at::mm_out(col_g, go_b[g].t(), w[g]);
      } else {
        col_g.copy_(at::mm(go_b[g].t(), w[g]));
      }
    }
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_col2im", [&] {
      col2im_coordinate<scalar_t>(
          columns.data_ptr<scalar_t>(), im.padded.data_ptr<scalar_t>(),
          im.index.data_ptr<int32_t>(), im.frac_y.data_ptr<scalar_t>(),
          im.frac_x.data_ptr<scalar_t>(), im.mask.data_ptr<scalar_t>(), geo, G, chunks, 0, P,
          grad_padded.data_ptr<scalar_t>(), partial.data_ptr<scalar_t>());
    });
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_coord", [&] {
      reduce_coordinate_grad<scalar_t>(
          partial.data_ptr<scalar_t>(), im.mask.data_ptr<scalar_t>(), geo, chunks,
          grad_offset.data_ptr<scalar_t>() + b * 2 * rows * P,
          mask.has_value() ? grad_mask.data_ptr<scalar_t>() + b * rows * P : nullptr);
    });
    grad_input[b].copy_(grad_padded.narrow(0, 1, s.height).narrow(1, 1, s.width).permute({2, 0, 1}));
  }
  // back from the column order [G, Cout/G, K, Cg] to [Cout, Cg, kh, kw]
  at::Tensor grad_weight = gw.view({G, cout_g, K, Cg})
                               .permute({0, 1, 3, 2})
                               .reshape({s.out_channels, Cg, s.kernel_h, s.kernel_w})
                               .contiguous();
  return {grad_input, grad_offset, grad_mask, grad_weight, grad_bias};
}

}  // namespace
}  // namespace deform_conv
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, CPU, m) {
  m.impl("modulated_deform_conv2d", TORCH_FN(detection::deform_conv::forward_cpu));
  m.impl("_modulated_deform_conv2d_backward", TORCH_FN(detection::deform_conv::backward_cpu));
}
