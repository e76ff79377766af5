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
// tiles (bands of positions across the images, see `tiling`); the sampling loops are compiled for
// the baseline ISA, AVX2 and AVX-512 and picked at run time (csrc/common/cpu_isa.h). Forward, per
// tile: im2col (parallel over positions, SIMD over channels), then output = W x columns as a 1x1
// convolution that ATen runs with oneDNN (see Conv1x1); where the AVX2 or AVX-512 loops run and
// the layer qualifies (float32, one conv group, C_out a multiple of 16, the weight in the L2
// cache: fused_forward), the forward instead samples a few rows at a time into a buffer in the L1
// cache and multiplies them there in registers (im2col_gemm), with no column tile and no oneDNN
// call. Backward, per tile: grad_columns = W^T x grad_output by at::mm (BLAS) or by oneDNN's
// convolution_backward, whichever is faster on the CPU at the shape (see backward_gemms); then
// one sweep over grad_columns does the col2im (into a padded channels-last grad), the
// offset/mask gradients and the tile's columns (the corners it reads are im2col's: no im2col pass
// in the backward); then grad_weight += grad_output x columns^T (summed over the tiles), by
// at::addmm_ or oneDNN likewise. The sweep's tasks are (image, run of chunks of kChannelChunk
// channels) pairs: a task owns its channels of its image's grad pixels (no atomics) and visits
// positions in a fixed order, and writes each chunk's partial sums over channels of the
// coordinate gradients; the chunks are then summed in a fixed order. How many chunks a task takes
// depends on the thread count, the sums do not, so the sampling results are bit-identical across
// runs and thread counts (the deterministic mode needs nothing else on CPU; grad_weight's GEMM
// may block by thread count).
// Scratch (padded images, plan, column tile, gradient buffers) comes from the calling thread's
// workspace (common/cpu_workspace.h), reused from one call to the next rather than allocated
// as fresh pages each time. Every change of layout (the input into its padded channels-last
// copy, a tile's output rows into NCHW, a tile of the output gradient into rows, the padded
// gradient back into NCHW) is a blocked copy of common/cpu_layout.h, not ATen's permuted copy.
// Where the input is channels-last in memory, so are the output and grad_input (as F.conv2d's);
// their rows and the padded gradient's interior then go there as plain copies.
// im2col_step is checked but does not matter on CPU (the column buffer is bounded by the tile).
// Accumulation is in the input dtype (float32 or float64).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/ceil_div.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "common/cpu_isa.h"
#include "common/cpu_layout.h"
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

// Channels per partial sum of the backward sweep, and per task where whole deformable groups
// would load the threads unevenly (whole_segment_runs). Fixed (never derived from the thread
// count), so the chunked sums of the coordinate gradients are the same whatever the number of
// threads. Each (position, kernel point) of a task ends in three horizontal sums, so small chunks
// pay for them: at the res3 shape (128 channels) the sweep took 60 / 38 / 19 ms per image with 32 /
// 64 / 128 (one thread, AVX-512; measured before the sums went through lanes, sixteenth round of
// benchmarks/RESULTS.md, which made them cheaper). With the lanes (seventeenth round), 128 and
// 256 still made the backward 0.91-0.95x at res3 / res4 on the 2-core VM, but the chunk also sets
// the sweep's most tasks (images x chunks), so a larger one idles threads on bigger CPUs, which
// that VM cannot measure; 64 allows two tasks per image at res3 and eight at res5.
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

// How many chunks of at most kChannelChunk channels a segment is cut into.
int64_t chunk_count(const Segment& s) {
  return at::ceil_div<int64_t>(s.c_hi - s.c_lo, kChannelChunk);
}

// The backward sweep's partial sums per image: each segment cut into chunk_count chunks (a task
// takes one of them or a segment's all: chunk_runs).
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

// A task of the backward sweep in each image: chunks [first, last) of channel_chunks, all of one
// segment (contiguous channels and columns), looped over inside each (position, kernel point).
struct ChunkRun {
  int64_t first, last;
};

// Each segment's chunks as one run (`whole`) or one run per chunk. Either way the sweep sums
// every grad pixel's terms and each chunk's partial sums in the same order, so the choice (made
// by the thread count) changes no result.
std::vector<ChunkRun> chunk_runs(const std::vector<Segment>& segs, bool whole) {
  std::vector<ChunkRun> runs;
  int64_t j = 0;
  for (const Segment& s : segs) {
    const int64_t m = chunk_count(s);
    if (whole) {
      runs.push_back(ChunkRun{j, j + m});
    } else {
      for (int64_t i = 0; i < m; ++i) runs.push_back(ChunkRun{j + i, j + i + 1});
    }
    j += m;
  }
  return runs;
}

// Whether the sweep's tasks take whole segments: where that does not lengthen the longest
// thread's share of chunks (at::parallel_for hands each thread a contiguous range of about
// tasks / threads of them). Two images of one 128-channel group on one or two threads: yes; on
// three, or three images on two threads, the chunks one by one spread better.
bool whole_segment_runs(const std::vector<Segment>& segs, int64_t images, int64_t threads) {
  int64_t chunks = 0, longest = 0;
  for (const Segment& s : segs) {
    const int64_t m = chunk_count(s);
    chunks += m;
    longest = std::max(longest, m);
  }
  const int64_t whole = images * static_cast<int64_t>(segs.size());
  return at::ceil_div(whole, threads) * longest <= at::ceil_div(images * chunks, threads);
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

// A GEMM tile: output positions [q0, q1) of images [b0, b1) (see `tiling`), whose column
// rows are (b - b0) * (q1 - q0) + (q - q0).
struct Tile {
  int64_t b0, b1, q0, q1;
  int64_t positions() const { return q1 - q0; }
  int64_t rows() const { return (b1 - b0) * (q1 - q0); }
};

// The sampling loops, compiled once per instruction-set variant (csrc/common/cpu_isa.h).
namespace isa_default {
#include "common/cpu_lanes.inc"
#include "deform_conv/cpu/deform_conv_loops.inc"
}  // namespace isa_default
#if DETECTION_CPU_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#include "common/cpu_lanes.inc"
#include "deform_conv/cpu/deform_conv_loops.inc"
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")
namespace isa_avx512 {
#include "common/cpu_lanes.inc"
#include "deform_conv/cpu/deform_conv_loops.inc"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

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

// The GEMM tiles: bands of output positions [q0, q1) across a run of images [b0, b1), of about
// kTileRows rows of columns (fewer where rows are so wide that they would pass kTileBytes), in
// order: image runs outer, bands inner, so that each image's positions come in order. Small
// enough that a narrow layer's tile of columns (1-2 MB at 16-32 channels) and its gradient are
// still in the cache when the GEMM (forward) and the col2im sweep (backward) read them back:
// with whole-batch tiles that round trip through memory took 15 % of the forward plus backward
// at the shapes demo's 16-32-channel layers (benchmarks/RESULTS.md). Large enough for full GEMM
// speed: from 256 channels on (3x3, float32) kTileBytes binds, as it did alone before, so the
// ResNet-50 res4 and res5 shapes keep their tiles (res3, 128 channels: 2048 rows, 9 MB). A band
// spans all the images of its run, so the backward sweep keeps one task per image (and chunk) for
// the threads. Depends on the shape only (never on the thread count or on im2col_step), so the
// results do not depend on them.
constexpr int64_t kTileRows = 2048;
constexpr int64_t kTileBytes = int64_t(16) << 20;

std::vector<Tile> tiling(int64_t batch, const Geometry& geo, int64_t element_size) {
  const int64_t P = geo.positions();
  const int64_t per_row = std::max<int64_t>(1, geo.kk() * geo.channels * element_size);
  const int64_t rows = std::clamp<int64_t>(kTileBytes / per_row, 1, kTileRows);
  // images per run, then positions per band, each evened out over its runs / bands
  const int64_t nb =
      at::ceil_div<int64_t>(batch, at::ceil_div<int64_t>(batch, std::min(batch, rows)));
  const int64_t per = std::clamp<int64_t>(rows / nb, 1, P);
  const int64_t T = at::ceil_div<int64_t>(P, at::ceil_div<int64_t>(P, per));
  std::vector<Tile> tiles;  // the first is the largest (only the last run / band can be short)
  for (int64_t b0 = 0; b0 < batch; b0 += nb) {
    for (int64_t q0 = 0; q0 < P; q0 += T) {
      tiles.push_back(Tile{b0, std::min(batch, b0 + nb), q0, std::min(P, q0 + T)});
    }
  }
  return tiles;
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

// dst [N, H+3, W+2, C] = src [N, C, H, W] into the interior (rows 1..H, columns 1..W,
// common/cpu_layout.h: transposed, or copied where src is channels-last in memory), zeros
// elsewhere: one zero pixel on every side plus one extra zero row at the bottom (the zero block).
// Every element is written once (no zero-fill first).
template <typename scalar_t>
void pad_channels_last(const scalar_t* src, bool src_channels_last, int64_t batch,
                       const Geometry& geo, scalar_t* dst) {
  const int64_t H = geo.height, W = geo.width, C = geo.channels, Wp = geo.padded_w();
  at::parallel_for(0, batch * (H + 3), grain(2 * C), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t y = t % (H + 3);
      scalar_t* row = dst + t * Wp * C;
      if (y == 0 || y > H) {
        std::fill(row, row + Wp * C, scalar_t(0));
      } else {
        std::fill(row, row + C, scalar_t(0));
        std::fill(row + (W + 1) * C, row + Wp * C, scalar_t(0));
      }
    }
  });
  const layout::ChannelsLast<scalar_t> interior{dst + (Wp + 1) * C, (H + 3) * Wp * C, Wp * C};
  if (src_channels_last) {
    layout::copy_channels_last<scalar_t>(layout::channels_last(src, C, H, W), batch, C, H, W,
                                         interior);
  } else {
    layout::to_channels_last<scalar_t>(layout::planar(src, C, H, W), batch, C, H, W, interior);
  }
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
    pad_channels_last<scalar_t>(input.const_data_ptr<scalar_t>(), layout::is_channels_last(input),
                                N, geo, pr.padded.mutable_data_ptr<scalar_t>());
    DETECTION_CPU_ISA_CALL(make_plan<scalar_t>, offset.data_ptr<scalar_t>(),
                           mask.has_value() ? mask->data_ptr<scalar_t>() : nullptr, N, geo, p,
                           reinterpret_cast<Sample<scalar_t>*>(pr.plan.data_ptr<uint8_t>()));
  });
  return pr;
}

// columns[0:tile.rows()] = the channels-last im2col of the tile.
void fill_columns(const Prepared& pr, const Geometry& geo, int64_t groups,
                  const std::vector<Segment>& segs, const Tile& tile, at::Tensor& columns) {
  AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "modulated_deform_conv2d_cpu_im2col", [&] {
    DETECTION_CPU_ISA_CALL(im2col<scalar_t>, pr.batch<scalar_t>(geo), geo, groups, segs, tile,
                           columns.data_ptr<scalar_t>());
  });
}

// Where the forward runs fused (im2col_gemm in the loops, no column matrix and no oneDNN call):
// the AVX2 or AVX-512 loops (cpu_fused_forward), float32, one conv group, C_out a multiple of
// kLanes (and with AVX2 at most kFusedMaxCoutAvx2: its 12 accumulators pass over the weight once
// per 16 outputs, and from 128 outputs on the column path was faster), every deformable group's
// channels in whole chunks of kLanes, and the weight [K*C, C_out] at most kFusedMaxWeightBytes
// (each block of rows reads all of it, so it must stay in the L2 cache).
constexpr int64_t kFusedMaxWeightBytes = int64_t(1) << 20;
constexpr int64_t kFusedMaxCoutAvx2 = 64;

bool fused_forward(const at::Tensor& input, const ConvShape& s, const ConvParams& p) {
#if DETECTION_CPU_MULTIVERSION
  constexpr int64_t lanes = isa_avx512::kLanes;
  return cpu_fused_forward() && input.scalar_type() == at::kFloat && p.groups == 1 &&
         s.out_channels % lanes == 0 && (s.channels / p.deform_groups) % lanes == 0 &&
         (cpu_isa() == CpuIsa::kAvx512 || s.out_channels <= kFusedMaxCoutAvx2) &&
         s.kernel_h * s.kernel_w * s.channels * s.out_channels * int64_t(sizeof(float)) <=
             kFusedMaxWeightBytes;
#else
  return false;
#endif
}

// rows [t.rows(), C_out] = bias + the tile's columns x wt [K*C, C_out], by im2col_gemm<R, V, L>:
// V vectors of L floats of C_out per pass, R rows per block; with AVX-512 R x V = 24 of the 32
// vector registers, with AVX2 6 x 2 = 12 of the 16 (3 x 4 lost from 64 outputs on: RESULTS.md).
void im2col_gemm_forward(const Batch<float>& in, const Geometry& geo,
                         const std::vector<Segment>& segs, const Tile& t, const float* wt,
                         const float* bias, int64_t cout, float* rows) {
#if DETECTION_CPU_MULTIVERSION
  if (cpu_isa() == CpuIsa::kAvx2) {
    isa_avx2::im2col_gemm<6, 2, 8>(in, geo, segs, t, wt, bias, cout, rows);
    return;
  }
  constexpr int L = isa_avx512::kLanes;
  const int64_t vectors = cout / L;
  if (vectors % 4 == 0) {
    isa_avx512::im2col_gemm<6, 4, L>(in, geo, segs, t, wt, bias, cout, rows);
  } else if (vectors % 3 == 0) {
    isa_avx512::im2col_gemm<8, 3, L>(in, geo, segs, t, wt, bias, cout, rows);
  } else if (vectors % 2 == 0) {
    isa_avx512::im2col_gemm<12, 2, L>(in, geo, segs, t, wt, bias, cout, rows);
  } else {
    isa_avx512::im2col_gemm<24, 1, L>(in, geo, segs, t, wt, bias, cout, rows);
  }
#endif
}

// The op's three GEMMs (output = W x columns, grad_weight = grad_output x columns^T,
// grad_columns = W^T x grad_output) are those of a grouped 1x1 convolution of a tile of columns
// seen as a channels-last image [1, K*C, 1, rows] -- exactly their memory layout [rows, K*C] --
// with the weight in column order [Cout, K*Cg, 1, 1]. ATen runs them with oneDNN, whose kernels
// reach dense-conv speed (AVX-512 where the CPU has it) where at::mm's BLAS may not: MKL's sgemm
// runs its AVX2 kernels on AMD CPUs (half the speed where 512-bit units are full width; see
// common/cpu_isa.h, cpu_backward_gemm, for where each library wins). The dilation of a 1x1 kernel
// changes nothing in the result; 2 steers ATen's backend choice to oneDNN also for a single thread
// (ATen sends undilated 1x1 convs of one thread to its own im2col + BLAS). float64, which
// oneDNN lacks, keeps dilation 1 and ATen's BLAS path.
struct Conv1x1 {
  std::vector<int64_t> stride{1, 1}, padding{0, 0}, dilation, output_padding{0, 0};
  explicit Conv1x1(at::ScalarType dtype)
      : dilation(dtype == at::kFloat ? std::vector<int64_t>{2, 2} : std::vector<int64_t>{1, 1}) {}
};

// The backward's two GEMMs (grad_columns = grad_rows x W, grad_weight = grad_rows^T x columns)
// as plain at::mm (BLAS) rather than Conv1x1's convolution_backward, where BLAS is the faster of
// the two on this CPU (csrc/common/cpu_isa.h, cpu_backward_gemm); one conv group only (grouped
// GEMMs stay a grouped convolution). At the shapes demo's layers (16-128 channels, 1408-5632 rows):
// on the AVX2 AMD development machine convolution_backward took 1.3-2.5x the time of the two at::mm
// calls at one thread (11.1 vs 6.1 ms at 32 channels, 47.8 vs 30.0 ms at 128), on an AVX-512 Intel
// Xeon (with AMX) 1.3-2.4x at one and two threads (12.1 vs 9.2 ms at 128 channels, one thread),
// and 1.1-1.5x at the ResNet-50 res3-res5 shapes; the AVX-512 AMD machine measured the
// opposite (oneDNN's AVX-512 kernels against MKL's AVX2 ones there), so it keeps the convolution.
// There the weight gradient still goes to BLAS once it outgrows the L2 cache
// (cpu_weight_grad_gemm): on the Zen 4 EPYC ResNet-50's res4 and res5 layers (2.4 and 9.4 MB).
// BLAS's weight gradient sums over the tiles inside the GEMM (addmm_, beta 1).
struct BackwardGemms {
  bool columns_by_mm, weight_by_mm;
};

BackwardGemms backward_gemms(int64_t groups, int64_t weight_grad_bytes) {
  if (groups != 1) return {false, false};
  return {cpu_backward_gemm() == CpuGemm::kBlas,
          cpu_weight_grad_gemm(weight_grad_bytes) == CpuGemm::kBlas};
}

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

// A tile's rows [rows, Cout] (row (b - b0) * T + (q - q0)) into planes [N, Cout, P] at positions
// [q0, q1) of images [b0, b1), or into planes channels-last in memory ([N, P, Cout]) where
// `channels_last` (a plain copy there): the tile seen as channels-last images [b1 - b0, 1, T,
// Cout] against a window of the planes (common/cpu_layout.h).
template <typename scalar_t>
void rows_to_planes(const scalar_t* rows, bool channels_last, const Tile& t, int64_t cout,
                    int64_t P, scalar_t* planes) {
  const int64_t T = t.positions();
  const layout::ChannelsLast<const scalar_t> tile{rows, T * cout, 0};
  if (channels_last) {
    layout::copy_channels_last<scalar_t>(
        tile, t.b1 - t.b0, cout, 1, T,
        layout::ChannelsLast<scalar_t>{planes + (t.b0 * P + t.q0) * cout, P * cout, 0});
    return;
  }
  layout::to_planar<scalar_t>(
      tile, t.b1 - t.b0, cout, 1, T,
      layout::Planar<scalar_t>{planes + t.b0 * cout * P + t.q0, cout * P, P, 0});
}

// And back: the tile's rows from the planes (channels-last in memory where `channels_last`).
template <typename scalar_t>
void planes_to_rows(const scalar_t* planes, bool channels_last, const Tile& t, int64_t cout,
                    int64_t P, scalar_t* rows) {
  const int64_t T = t.positions();
  const layout::ChannelsLast<scalar_t> tile{rows, T * cout, 0};
  if (channels_last) {
    layout::copy_channels_last<scalar_t>(
        layout::ChannelsLast<const scalar_t>{planes + (t.b0 * P + t.q0) * cout, P * cout, 0},
        t.b1 - t.b0, cout, 1, T, tile);
    return;
  }
  layout::to_channels_last<scalar_t>(
      layout::Planar<const scalar_t>{planes + t.b0 * cout * P + t.q0, cout * P, P, 0}, t.b1 - t.b0,
      cout, 1, T, tile);
}

// An input or output gradient as the kernels read it: as it is where it is channels-last in
// memory (a channels-last model's activations: read in place, no NCHW copy), else contiguous.
at::Tensor contiguous_input(const at::Tensor& t) {
  return layout::is_channels_last(t) ? t : t.contiguous();
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
  const at::Tensor input = contiguous_input(input_), offset = offset_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  const at::MemoryFormat format = result_memory_format(input_);
  at::Tensor output =
      at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, input.options().memory_format(format));
  if (s.batch == 0) return output;
  if (s.channels == 0 || s.out_channels == 0 || s.out_h * s.out_w == 0) {  // the bias only
    output.zero_();
    if (bias_.has_value()) output.add_(bias_->view({1, -1, 1, 1}));
    return output;
  }

  const Geometry geo = geometry(s, p);
  const int64_t P = geo.positions(), KC = geo.kk() * s.channels;
  const std::vector<Segment> segs = segments(geo, p.groups);
  const Prepared pr = prepare_batch(input, offset, mask, geo, p);
  const std::vector<Tile> tiles = tiling(s.batch, geo, input.element_size());
  if (fused_forward(input, s, p)) {
    // the weight [C_out, C, kh, kw] as wt [K*C, C_out] in the column order, one copy
    const at::Tensor wt = weight_.detach()
                              .reshape({s.out_channels, s.channels, geo.kk()})
                              .permute({2, 1, 0})
                              .reshape({KC, s.out_channels})
                              .contiguous();  // a view where K = 1
    const at::Tensor rows =
        workspace(kDcnRows, {tiles.front().rows(), s.out_channels}, input.options());
    const at::Tensor bias = bias_.has_value() ? bias_->contiguous() : at::Tensor();
    for (const Tile& t : tiles) {
      im2col_gemm_forward(pr.batch<float>(geo), geo, segs, t, wt.const_data_ptr<float>(),
                          bias.defined() ? bias.const_data_ptr<float>() : nullptr, s.out_channels,
                          rows.mutable_data_ptr<float>());
      rows_to_planes<float>(rows.const_data_ptr<float>(), format == at::MemoryFormat::ChannelsLast,
                            t, s.out_channels, P, output.mutable_data_ptr<float>());
    }
    return output;
  }
  const Conv1x1 c(input.scalar_type());
  // detached: the GEMMs below must not record an autograd graph
  const at::Tensor w = weight_in_column_order(weight_.detach(), geo.kk());
  at::Tensor columns = workspace(kDcnColumns, {tiles.front().rows(), KC}, input.options());
  for (const Tile& t : tiles) {
    fill_columns(pr, geo, p.groups, segs, t, columns);
    const at::Tensor out =
        as_rows(at::convolution(as_image(columns.narrow(0, 0, t.rows())), w, std::nullopt, c.stride,
                                c.padding, c.dilation, false, c.output_padding, p.groups))
            .contiguous();
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_output", [&] {
      rows_to_planes<scalar_t>(out.const_data_ptr<scalar_t>(),
                               format == at::MemoryFormat::ChannelsLast, t, s.out_channels, P,
                               output.mutable_data_ptr<scalar_t>());
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
  const at::Tensor input = contiguous_input(input_), offset = offset_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();

  const at::MemoryFormat format = result_memory_format(input_);
  at::Tensor grad_input = at::empty_like(input, format);
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
  const at::Tensor grad_planes = contiguous_input(grad_output_.detach());
  const bool grad_channels_last = layout::is_channels_last(grad_planes);
  const std::vector<Segment> segs = segments(geo, p.groups);
  const std::vector<Segment> chunks = channel_chunks(segs);
  const Prepared pr = prepare_batch(input, offset, mask, geo, p);
  const std::vector<Tile> tiles = tiling(s.batch, geo, input.element_size());
  at::Tensor columns = workspace(kDcnColumns, {tiles.front().rows(), KC}, input.options());
  const BackwardGemms gemms =
      backward_gemms(p.groups, s.out_channels * KC * static_cast<int64_t>(input.element_size()));
  at::Tensor gw;  // [Cout, K*Cg] (BLAS) or [Cout, K*Cg, 1, 1], summed over the tiles in order
  // the padded channels-last grad of every image, and the chunks' coordinate partials
  at::Tensor grad_padded = workspace(kDcnGradPadded, pr.padded.sizes(), input.options()).zero_();
  at::Tensor partial = workspace(
      kDcnPartial, {s.batch, static_cast<int64_t>(chunks.size()), K, 3, P}, input.options());
  // The sweep's tasks: each segment's chunks as one task per image where that leaves the threads
  // as evenly loaded (whole_segment_runs; a task then writes whole rows of the tile's columns and
  // takes each sample's weights once), else one task per (image, chunk). Which one changes no
  // result (chunk_runs).
  // The tile's columns come from the sweep (no im2col pass) where a task takes a deformable
  // group's channels whole: at the shapes demo's 16-32 channels the backward took 0.86-0.96x the
  // time (RESULTS.md, twenty-fifth round), at ResNet-50's res3-res5 0.94-0.98x (twenty-sixth
  // round); where tasks write 64-channel slices of wide rows (res4 and res5 on more threads than
  // images), im2col does it faster (1.12-1.20x, twenty-fifth round).
  const bool whole_runs =
      whole_segment_runs(segs, tiles.front().b1 - tiles.front().b0, at::get_num_threads());
  const std::vector<ChunkRun> runs = chunk_runs(segs, whole_runs);
  const bool sweep_columns = whole_runs || s.channels / p.deform_groups <= kChannelChunk;
  for (const Tile& t : tiles) {
    if (!sweep_columns) fill_columns(pr, geo, p.groups, segs, t, columns);
    const at::Tensor cols = columns.narrow(0, 0, t.rows());
    // the tile's grad_output as rows [rows, Cout], the GEMMs' layout
    const at::Tensor g = workspace(kDcnGradRows, {t.rows(), s.out_channels}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_grad_rows", [&] {
      planes_to_rows<scalar_t>(grad_planes.const_data_ptr<scalar_t>(), grad_channels_last, t,
                               s.out_channels, P, g.mutable_data_ptr<scalar_t>());
    });
    // [rows, K*C], and oneDNN's grad_weight of the tile where it comes in the same call (the
    // columns already there); its backward by data reads the columns' shape only
    at::Tensor grad_columns, gw_tile;
    if (gemms.columns_by_mm) {
      grad_columns = workspace(kDcnGradColumns, {t.rows(), KC}, input.options());
      at::mm_out(grad_columns, g, w.reshape({s.out_channels, KC}));
    }
    // oneDNN's grad_columns and / or grad_weight of the tile (a grouped 1x1 convolution's)
    const auto onednn_backward = [&](bool columns_grad, bool weight_grad) {
      return at::convolution_backward(as_image(g), as_image(cols), w, std::nullopt, c.stride,
                                      c.padding, c.dilation, false, c.output_padding, p.groups,
                                      {columns_grad, weight_grad, false});
    };
    const bool weight_now = !gemms.weight_by_mm && !sweep_columns;
    if (!gemms.columns_by_mm || weight_now) {
      const auto grads = onednn_backward(!gemms.columns_by_mm, weight_now);
      if (!gemms.columns_by_mm) grad_columns = as_rows(std::get<0>(grads)).contiguous();
      gw_tile = std::get<1>(grads);
    }
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_col2im", [&] {
      const scalar_t* gc = grad_columns.const_data_ptr<scalar_t>();
      scalar_t* gp = grad_padded.mutable_data_ptr<scalar_t>();
      scalar_t* part = partial.mutable_data_ptr<scalar_t>();
      scalar_t* cp = cols.mutable_data_ptr<scalar_t>();
      if (sweep_columns) {
        DETECTION_CPU_ISA_CALL(col2im_coordinate<true>, gc, pr.batch<scalar_t>(geo), geo, p.groups,
                               chunks, runs, t, gp, part, cp);
      } else {
        DETECTION_CPU_ISA_CALL(col2im_coordinate<false>, gc, pr.batch<scalar_t>(geo), geo, p.groups,
                               chunks, runs, t, gp, part, cp);
      }
    });
    // summed in place: a new sum per tile (9.4 MB at ResNet-50's res5) came from glibc as fresh
    // pages, 30,000-40,000 more page faults per call there (RESULTS.md, twenty-first round)
    if (gemms.weight_by_mm) {
      if (!gw.defined()) {
        gw = at::mm(g.t(), cols);
      } else {
        gw.addmm_(g.t(), cols);
      }
    } else {
      if (!gw_tile.defined()) {  // after the sweep, which wrote the columns
        gw_tile = std::get<1>(onednn_backward(false, true));
      }
      if (!gw.defined()) {
        gw = gw_tile;
      } else {
        gw.add_(gw_tile);
      }
    }
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_reduce", [&] {
    const scalar_t* m = mask.has_value() ? mask->const_data_ptr<scalar_t>() : nullptr;
    DETECTION_CPU_ISA_CALL(reduce_coordinate_grad<scalar_t>, partial.const_data_ptr<scalar_t>(), m,
                           s.batch, geo, chunks, grad_offset.mutable_data_ptr<scalar_t>(),
                           m != nullptr ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr);
  });
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "modulated_deform_conv2d_cpu_grad_input", [&] {
    // the padded channels-last interior (from pixel (1, 1)) into NCHW, or into channels-last
    const int64_t C = s.channels, row = geo.padded_w() * C;
    const layout::ChannelsLast<const scalar_t> interior{
        grad_padded.const_data_ptr<scalar_t>() + row + C, (s.height + 3) * row, row};
    scalar_t* dst = grad_input.mutable_data_ptr<scalar_t>();
    if (format == at::MemoryFormat::ChannelsLast) {
      layout::copy_channels_last<scalar_t>(interior, s.batch, C, s.height, s.width,
                                           layout::channels_last(dst, C, s.height, s.width));
    } else {
      layout::to_planar<scalar_t>(interior, s.batch, C, s.height, s.width,
                                  layout::planar(dst, C, s.height, s.width));
    }
  });
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
