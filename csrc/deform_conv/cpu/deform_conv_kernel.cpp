// CPU kernels of the modulated deformable convolution (DCNv2; DCNv1 when mask is None).
// Over 350 lines: the steps below read top-down in one file (the loops are in the .inc).
//
// Once per call, for the whole batch (one parallel region each, so small maps and narrow layers
// pay no per-image overhead):
//  1. the input is copied channels-last and zero-padded to [N, H + 3, W + 2, C]: one pixel on
//     every side (the "zero-padded bilinear" of the convention) plus one extra row at the bottom,
//     so that rows H + 1, H + 2 x columns 0, 1 form an all-zero 2x2 block of pixels;
//  2. a sampling plan is built once per (deform group, kernel point, output position): the
//     top-left corner's pixel index in the padded plane, the fractional parts ly, lx and the
//     mask, stored position-major (the samples of one row of the columns are contiguous) and
//     built by the ISA-specific loops. Samples outside the band -1 < y < H, -1 < x < W (and NaN /
//     huge offsets) point at the zero block with ly = lx = 0, so every inner loop is branch-free
//     and in bounds;
//  3. channels-last deformable im2col into columns [positions, K*C] (per position: conv group,
//     kernel point, channel), whose inner loop runs over contiguous channels (SIMD, no gathers),
//     against the weight permuted to the same order.
// The batch's output positions form the rows of one column matrix [N * P, K*C], processed in
// tiles of about kTileBytes (a tile may span images). Per tile: im2col (parallel over
// positions, SIMD over channels; the loops are compiled for the baseline ISA, AVX2 and AVX-512
// and picked at run time, csrc/common/cpu_isa.h), then the GEMMs as a 1x1 convolution that ATen
// runs with oneDNN (see Conv1x1). Forward: output = W x columns. Backward: grad_weight and
// grad_columns in one convolution_backward, then one sweep over grad_columns does both the
// col2im (into a padded channels-last grad) and the offset/mask gradients. Its tasks are (image,
// chunk of kChannelChunk channels) pairs: a task owns its channels of its image's grad pixels
// (no atomics) and visits positions in a fixed order, and writes its partial sums over channels
// of the coordinate gradients; the chunks are then summed in a fixed order. Nothing depends on the
// thread count, so the sampling results are bit-identical across runs and thread counts (the
// deterministic mode needs nothing else on CPU; grad_weight's GEMM may block by thread count).
// Scratch (padded images, plan, column tile, gradient buffers) comes from the calling thread's
// workspace (common/cpu_workspace.h), reused from one call to the next rather than allocated
// as fresh pages each time.
// im2col_step is checked but does not matter on CPU (the column buffer is bounded by the tile).
// Accumulation is in the input dtype (float32 or float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "common/cpu_isa.h"
#include "common/cpu_workspace.h"
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
  int64_t zero_block() const { return (height + 1) * (width + 2); }
};

Geometry geometry(const ConvShape& s, const ConvParams& p) {
  return Geometry{s.channels, s.height,   s.width, p.deform_groups,
                  s.kernel_h, s.kernel_w, s.out_h, s.out_w};
}

// Channels per task of the backward sweep. Fixed (never derived from the thread count), so the
// chunked sums of the coordinate gradients are the same whatever the number of threads. Each
// (position, kernel point) of a task ends in three horizontal sums, so small chunks pay for
// them: at the res3 shape (128 channels) the sweep takes 60 / 38 / 19 ms per image with 32 / 64
// / 128 (one thread, AVX-512); 64 keeps two tasks per image there for two threads.
constexpr int64_t kChannelChunk = 64;

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
      chunks.push_back(
          Segment{c, std::min(c + kChannelChunk, s.c_hi), s.deform_group, s.column + (c - s.c_lo)});
    }
  }
  return chunks;
}

// One entry of the sampling plan: the top-left corner's pixel index in the padded plane, the
// fractional parts ly, lx and the mask (1 without one). A sample outside the band points at the
// zero block with ly = lx = 0.
template <typename scalar_t>
struct Sample {
  int32_t index;
  scalar_t frac_y, frac_x, mask;
};

// The batch's state, as raw pointers for the sampling loops: the padded channels-last images
// [N, H+3, W+2, C] (image b at padded + b * image_stride) and the sampling plan, position-major:
// entry ((b * P + q) * dg + g) * K + k, so that the dg * K samples of one output position (one
// row of the columns) are contiguous. Built by prepare_batch.
template <typename scalar_t>
struct Batch {
  const scalar_t* padded;
  const Sample<scalar_t>* plan;
  int64_t image_stride;
};

// The sampling loops, compiled once per instruction-set variant (csrc/common/cpu_isa.h).
namespace isa_default {
#include "deform_conv/cpu/deform_conv_loops.inc"
}  // namespace isa_default
#if DETECTION_CPU_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#include "deform_conv/cpu/deform_conv_loops.inc"
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
namespace isa_avx512 {
#include "deform_conv/cpu/deform_conv_loops.inc"
}  // namespace isa_avx512
#pragma GCC pop_options
#define DCN_CPU_ISA_CALL(fn, ...)   \
  switch (cpu_isa()) {              \
    case CpuIsa::kAvx512:           \
      isa_avx512::fn(__VA_ARGS__);  \
      break;                        \
    case CpuIsa::kAvx2:             \
      isa_avx2::fn(__VA_ARGS__);    \
      break;                        \
    default:                        \
      isa_default::fn(__VA_ARGS__); \
  }
#else
#define DCN_CPU_ISA_CALL(fn, ...) isa_default::fn(__VA_ARGS__)
#endif

// grad_offset / grad_mask rows r = (b, g, k) of the batch from the chunk partials
// [N, chunks, K, 3, P], summed over the chunks in order.
template <typename scalar_t>
void reduce_coordinate_grad(const scalar_t* partial, const Sample<scalar_t>* plan, int64_t batch,
                            const Geometry& geo, const std::vector<Segment>& chunks,
                            scalar_t* grad_offset, scalar_t* grad_mask) {
  const int64_t K = geo.kk(), P = geo.positions(), dgK = geo.deform_groups * K;
  const int64_t nch = static_cast<int64_t>(chunks.size());
  at::parallel_for(0, batch * dgK, grain(3 * P), [&](int64_t begin, int64_t end) {
    std::vector<const scalar_t*> parts;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / dgK, g = (r % dgK) / K, k = r % K;
      parts.clear();
      for (int64_t j = 0; j < nch; ++j) {
        if (chunks[j].deform_group == g) {
          parts.push_back(partial + ((b * nch + j) * K + k) * 3 * P);
        }
      }
      // the mask of sample (b, g, k) at position q: plan[(b * P + q) * dgK + g * K + k]
      const Sample<scalar_t>* pm = plan + b * P * dgK + (r % dgK);
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
        const scalar_t m = pm[q * dgK].mask;
        go_y[q] = m * sy;
        go_x[q] = m * sx;
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

// The GEMM tiles: the columns of all images form one matrix whose rows are the batch's output
// positions r = b * P + q in order; a tile is a run of about kTileBytes of those rows (so a tile
// may end one image and start the next, and small maps fill whole tiles). Small enough that the
// buffers of one tile (columns, their gradient) come back from the allocator's free lists rather
// than as fresh pages (a page fault per 4 KiB: about a third of the GEMM time for 64 MB buffers)
// and large enough for full GEMM speed. Depends on the shape only (never on the thread count or
// on im2col_step), so the results do not depend on it.
constexpr int64_t kTileBytes = int64_t(16) << 20;

struct Tiling {
  int64_t rows, count, size;  // rows = batch * P; count tiles of at most `size` rows
};

Tiling tiling(int64_t batch, const Geometry& geo, int64_t element_size) {
  const int64_t rows = batch * geo.positions();
  const int64_t per_row = std::max<int64_t>(1, geo.kk() * geo.channels * element_size);
  const int64_t most = std::max<int64_t>(1, kTileBytes / per_row);
  const int64_t count = (rows + most - 1) / most;
  return Tiling{rows, count, (rows + count - 1) / count};
}

// Calls f(b, q0, T, row) for each image b with positions [q0, q0 + T) in rows [r0, r1) of the
// tiling, `row` being the first one's row in the tile.
template <typename F>
void for_each_image(int64_t r0, int64_t r1, int64_t P, const F& f) {
  for (int64_t b = r0 / P; b * P < r1; ++b) {
    const int64_t q0 = std::max(r0, b * P) - b * P, q1 = std::min(r1, (b + 1) * P) - b * P;
    f(b, q0, q1 - q0, b * P + q0 - r0);
  }
}

// The batch's padded channels-last images [N, H+3, W+2, C] and sampling plan (N * P * dg * K
// `Sample`s, position-major, in a byte tensor), built once per call: one parallel region each,
// whatever the batch size.
struct Prepared {
  at::Tensor padded, plan;
  template <typename scalar_t>
  Batch<scalar_t> batch(const Geometry& geo) const {
    return Batch<scalar_t>{padded.data_ptr<scalar_t>(),
                           reinterpret_cast<const Sample<scalar_t>*>(plan.data_ptr<uint8_t>()),
                           (geo.height + 3) * geo.padded_w() * geo.channels};
  }
};

// dst [N, H+3, W+2, C] = src [N, C, H, W] transposed into the interior (rows 1..H, columns
// 1..W), zeros elsewhere: one zero pixel on every side plus one extra zero row at the bottom
// (the zero block). Every element is written once (no zero-fill first); parallel over rows.
template <typename scalar_t>
void pad_channels_last(const scalar_t* src, int64_t batch, const Geometry& geo, scalar_t* dst) {
  const int64_t H = geo.height, W = geo.width, C = geo.channels, Wp = geo.padded_w();
  at::parallel_for(0, batch * (H + 3), grain(Wp * C), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (H + 3), y = t % (H + 3);
      scalar_t* row = dst + t * Wp * C;
      if (y == 0 || y > H) {
        std::fill(row, row + Wp * C, scalar_t(0));
        continue;
      }
      std::fill(row, row + C, scalar_t(0));
      std::fill(row + (W + 1) * C, row + Wp * C, scalar_t(0));
      const scalar_t* plane = src + b * C * H * W + (y - 1) * W;
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* s = plane + c * H * W;
        scalar_t* d = row + C + c;
        for (int64_t x = 0; x < W; ++x) d[x * C] = s[x];
      }
    }
  });
}

Prepared prepare_batch(const at::Tensor& input, const at::Tensor& offset,
                       const std::optional<at::Tensor>& mask, const Geometry& geo,
                       const ConvParams& p) {
  Prepared pr;
  const int64_t N = input.size(0), P = geo.positions();
  pr.padded =
      workspace(kDcnPadded, {N, geo.height + 3, geo.padded_w(), geo.channels}, input.options());
  const int64_t entries = N * P * geo.deform_groups * geo.kk();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_plan", [&] {
    pr.plan = workspace(kDcnPlan, {entries * int64_t(sizeof(Sample<scalar_t>))},
                        input.options().dtype(at::kByte));
    pad_channels_last<scalar_t>(input.data_ptr<scalar_t>(), N, geo, pr.padded.data_ptr<scalar_t>());
    DCN_CPU_ISA_CALL(make_plan<scalar_t>, offset.data_ptr<scalar_t>(),
                     mask.has_value() ? mask->data_ptr<scalar_t>() : nullptr, N, geo, p,
                     reinterpret_cast<Sample<scalar_t>*>(pr.plan.data_ptr<uint8_t>()));
  });
  return pr;
}

// columns[0:r1 - r0] = the channels-last im2col of rows [r0, r1).
void fill_columns(const Prepared& pr, const Geometry& geo, int64_t groups,
                  const std::vector<Segment>& segs, int64_t r0, int64_t r1, at::Tensor& columns) {
  AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "modulated_deform_conv2d_cpu_im2col", [&] {
    DCN_CPU_ISA_CALL(im2col<scalar_t>, pr.batch<scalar_t>(geo), geo, groups, segs, r0, r1,
                     columns.data_ptr<scalar_t>());
  });
}

// The op's three GEMMs (output = W x columns, grad_weight = grad_output x columns^T,
// grad_columns = W^T x grad_output) are those of a grouped 1x1 convolution of a tile of columns
// seen as a channels-last image [1, K*C, 1, rows] -- exactly their memory layout [rows, K*C] --
// with the weight in column order [Cout, K*Cg, 1, 1]. ATen runs them with oneDNN, whose kernels
// reach dense-conv speed (AVX-512 where the CPU has it) where at::mm's BLAS may not: MKL's sgemm
// runs its AVX2 kernels on AMD CPUs, half the speed. The dilation of a 1x1 kernel changes
// nothing in the result; 2 steers ATen's backend choice to oneDNN also for a single thread
// (ATen sends undilated 1x1 convs of one thread to its own im2col + BLAS). float64, which
// oneDNN lacks, keeps dilation 1 and ATen's BLAS path.
struct Conv1x1 {
  std::vector<int64_t> stride{1, 1}, padding{0, 0}, dilation, output_padding{0, 0};
  explicit Conv1x1(at::ScalarType dtype)
      : dilation(dtype == at::kFloat ? std::vector<int64_t>{2, 2} : std::vector<int64_t>{1, 1}) {}
};

// The backward's two GEMMs (grad_columns = grad_rows x W, grad_weight = grad_rows^T x columns)
// as plain at::mm (BLAS) rather than Conv1x1's convolution_backward, where the CPU lacks AVX-512
// (and for one conv group). On the AVX2 development machine at the shapes demo's layers (one
// thread, 16-128 channels, 1408-5632 rows) convolution_backward took 1.3-2.5x the time of the
// two at::mm calls (11.1 vs 6.1 ms at 32 channels, 47.8 vs 30.0 ms at 128); the AVX-512 machine
// of benchmarks/RESULTS.md measured the opposite (oneDNN's AVX-512 kernels against BLAS's AVX2
// ones), so it keeps the convolution.
bool backward_gemms_as_mm(int64_t groups) { return groups == 1 && cpu_isa() != CpuIsa::kAvx512; }

// rows [n, F] (contiguous) as the channels-last image [1, F, 1, n], and back.
at::Tensor as_image(const at::Tensor& rows) {
  return rows.view({1, 1, rows.size(0), rows.size(1)}).permute({0, 3, 1, 2});
}

at::Tensor as_rows(const at::Tensor& image) {
  return image.permute({0, 2, 3, 1}).reshape({image.size(3), image.size(1)});
}

// weight [Cout, Cg, kh, kw] -> [Cout, K*Cg, 1, 1] in the column order (k outer, channel inner).
at::Tensor weight_in_column_order(const at::Tensor& weight, int64_t K) {
  const int64_t cout = weight.size(0), Cg = weight.size(1);
  return weight.reshape({cout, Cg, K}).transpose(1, 2).reshape({cout, K * Cg, 1, 1});
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
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  at::Tensor output = at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, input.options());
  if (s.batch == 0) return output;
  if (s.channels == 0 || s.out_channels == 0 || s.out_h * s.out_w == 0) {  // the bias only
    output.zero_();
    if (bias_.has_value()) output.add_(bias_->view({1, -1, 1, 1}));
    return output;
  }

  const Geometry geo = geometry(s, p);
  const int64_t P = geo.positions(), KC = geo.kk() * s.channels;
  const Conv1x1 c(input.scalar_type());
  // detached: the GEMMs below must not record an autograd graph
  const at::Tensor w = weight_in_column_order(weight_.detach(), geo.kk());
  const std::vector<Segment> segs = segments(geo, p.groups);
  const Prepared pr = prepare_batch(input, offset, mask, geo, p);
  const Tiling tl = tiling(s.batch, geo, input.element_size());
  at::Tensor columns = workspace(kDcnColumns, {tl.size, KC}, input.options());
  for (int64_t r0 = 0; r0 < tl.rows; r0 += tl.size) {
    const int64_t r1 = std::min(tl.rows, r0 + tl.size);
    fill_columns(pr, geo, p.groups, segs, r0, r1, columns);
    const at::Tensor out =
        as_rows(at::convolution(as_image(columns.narrow(0, 0, r1 - r0)), w, std::nullopt, c.stride,
                                c.padding, c.dilation, false, c.output_padding, p.groups));
    if (r0 % P == 0 && r1 % P == 0) {  // whole images: one transposing copy
      output.narrow(0, r0 / P, (r1 - r0) / P)
          .view({(r1 - r0) / P, s.out_channels, P})
          .copy_(out.reshape({(r1 - r0) / P, P, s.out_channels}).transpose(1, 2));
      continue;
    }
    for_each_image(r0, r1, P, [&](int64_t b, int64_t q0, int64_t T, int64_t row) {
      output[b].view({s.out_channels, P}).narrow(1, q0, T).copy_(out.narrow(0, row, T).t());
    });
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
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();

  at::Tensor grad_input = at::empty_like(input, at::MemoryFormat::Contiguous);
  at::Tensor grad_offset = at::empty_like(offset, at::MemoryFormat::Contiguous);
  at::Tensor grad_mask = mask.has_value() ? at::empty_like(*mask, at::MemoryFormat::Contiguous)
                                          : at::empty({0}, input.options());
  at::Tensor grad_bias =
      bias_.has_value() ? grad_output_.sum({0, 2, 3}) : at::empty({0}, input.options());
  if (s.batch == 0 || s.channels == 0 || s.out_channels == 0 || s.out_h * s.out_w == 0) {
    grad_input.zero_();
    grad_offset.zero_();
    grad_mask.zero_();
    return {grad_input, grad_offset, grad_mask,
            at::zeros_like(weight_, at::MemoryFormat::Contiguous), grad_bias};
  }

  const Geometry geo = geometry(s, p);
  const int64_t K = geo.kk(), P = geo.positions(), KC = K * s.channels;
  const int64_t Cg = s.channels / p.groups;
  const Conv1x1 c(input.scalar_type());
  const at::Tensor w = weight_in_column_order(weight_.detach(), K);
  // grad_output as rows [N * P, Cout], the GEMMs' layout
  const at::Tensor grad_rows =
      grad_output_.detach().permute({0, 2, 3, 1}).reshape({s.batch * P, s.out_channels});
  const std::vector<Segment> segs = segments(geo, p.groups);
  const std::vector<Segment> chunks = channel_chunks(segs);
  const Prepared pr = prepare_batch(input, offset, mask, geo, p);
  const Tiling tl = tiling(s.batch, geo, input.element_size());
  at::Tensor columns = workspace(kDcnColumns, {tl.size, KC}, input.options());
  at::Tensor gw;  // [Cout, K*Cg, 1, 1], summed over the tiles in order
  // the padded channels-last grad of every image, and the chunks' coordinate partials
  at::Tensor grad_padded = workspace(kDcnGradPadded, pr.padded.sizes(), input.options()).zero_();
  at::Tensor partial = workspace(
      kDcnPartial, {s.batch, static_cast<int64_t>(chunks.size()), K, 3, P}, input.options());
  for (int64_t r0 = 0; r0 < tl.rows; r0 += tl.size) {
    const int64_t r1 = std::min(tl.rows, r0 + tl.size);
    fill_columns(pr, geo, p.groups, segs, r0, r1, columns);
    at::Tensor grad_columns, gw_tile;  // [rows, K*C], and this tile's grad_weight
    if (backward_gemms_as_mm(p.groups)) {
      const at::Tensor g = grad_rows.narrow(0, r0, r1 - r0);  // [rows, Cout]
      grad_columns = workspace(kDcnGradColumns, {r1 - r0, KC}, input.options());
      at::mm_out(grad_columns, g, w.reshape({s.out_channels, KC}));
      gw_tile = at::mm(g.t(), columns.narrow(0, 0, r1 - r0));
    } else {
      const auto grads = at::convolution_backward(
          as_image(grad_rows.narrow(0, r0, r1 - r0)), as_image(columns.narrow(0, 0, r1 - r0)), w,
          std::nullopt, c.stride, c.padding, c.dilation, false, c.output_padding, p.groups,
          {true, true, false});
      grad_columns = as_rows(std::get<0>(grads)).contiguous();
      gw_tile = std::get<1>(grads);
    }
    gw = r0 == 0 ? gw_tile : gw + gw_tile;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_col2im", [&] {
      DCN_CPU_ISA_CALL(col2im_coordinate<scalar_t>, grad_columns.data_ptr<scalar_t>(),
                       pr.batch<scalar_t>(geo), geo, p.groups, chunks, r0, r1,
                       grad_padded.data_ptr<scalar_t>(), partial.data_ptr<scalar_t>());
    });
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_reduce", [&] {
    reduce_coordinate_grad<scalar_t>(partial.data_ptr<scalar_t>(), pr.batch<scalar_t>(geo).plan,
                                     s.batch, geo, chunks, grad_offset.data_ptr<scalar_t>(),
                                     mask.has_value() ? grad_mask.data_ptr<scalar_t>() : nullptr);
  });
  grad_input.copy_(grad_padded.narrow(1, 1, s.height).narrow(2, 1, s.width).permute({0, 3, 1, 2}));
  // back from the column order [Cout, K, Cg] to [Cout, Cg, kh, kw]
  at::Tensor grad_weight = gw.view({s.out_channels, K, Cg})
                               .transpose(1, 2)
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
