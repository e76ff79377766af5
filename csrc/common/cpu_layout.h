// Planar (NCHW) <-> channels-last copies of the CPU kernels, blocked so that every cache line on
// the strided side is touched once.
//
// The kernels work channels-last (SIMD over contiguous channels) on NCHW tensors, so they convert
// on the way in and out. ATen's copy of a permuted tensor (`t.permute(...).contiguous()`) walks
// the destination in order and reads the source at a stride of C elements: every source line is
// read C / 16 times, from farther than the cache once an image passes it. One thread, float32, on
// a 2-core Intel Xeon VM (AVX-512): channels-last -> NCHW of [2, 128, 100, 136] took 26.6 ms and
// of [2, 1024, 50, 68] 50.7 ms, against 1.2 and 3.5 ms for a plain copy of the same tensors
// (benchmarks/RESULTS.md, fifteenth round: the deformable conv's input gradient at the ResNet-50
// res3 shape was a tenth of the op's forward plus backward). These loops: 4.1-5.3 and 13 ms with
// a scalar loop per block, 1.7-1.8 and 6.7-7.2 ms with the blocks transposed in registers
// (sixteenth round).
// A task is a run of pixels of one image row (about 16 K elements); within it, blocks of kBlock
// channels: per pixel one contiguous run of kBlock channels on the channels-last side against
// kBlock rows written (or read) in order on the planar side; float32 blocks of kBlock pixels
// go through an AVX2 / AVX-512 transpose in registers. Plain copies: nothing depends on the
// thread count, and the result is the same bit for bit on every path.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ceil_div.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/cpu_isa.h"
#include "common/memory_format.h"

#if DETECTION_CPU_MULTIVERSION
#include <immintrin.h>
#endif

namespace detection {
namespace layout {

constexpr int64_t kBlock = 16;  // channels per block: a 64-byte line of float32

// Planar images: element (n, c, y, x) at data + n * image + c * channel + y * row + x.
template <typename T>
struct Planar {
  T* data;
  int64_t image, channel, row;
};

// Channels-last images: element (n, y, x, c) at data + n * image + y * row + x * C + c. A padded
// buffer passes the address of its first interior pixel and its own strides.
template <typename T>
struct ChannelsLast {
  T* data;
  int64_t image, row;
};

// Runs pixel_run(n, y, x0, x1) over every image row of [N, H, W], cut into runs of pixels of
// about 16 K elements of C channels each, in parallel where there is more than ATen's grain
// (32 K elements, as its own copies).
template <typename F>
void for_pixel_runs(int64_t N, int64_t C, int64_t H, int64_t W, const F& pixel_run) {
  if (N == 0 || C == 0 || H == 0 || W == 0) return;
  const int64_t run = std::min<int64_t>(W, std::max<int64_t>(16, (int64_t(1) << 14) / C));
  const int64_t runs = at::ceil_div<int64_t>(W, run);
  const int64_t grain = at::ceil_div<int64_t>(at::internal::GRAIN_SIZE, run * C);
  at::parallel_for(0, N * H * runs, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t x0 = (t % runs) * run, row = t / runs;
      pixel_run(row / H, row % H, x0, std::min(W, x0 + run));
    }
  });
}

// dst[i * dst_row + j] = src[j * src_row + i] for a float32 block of kBlock x kBlock (i, j <
// kBlock): 16 pixels of 16 channels, planar -> channels-last or back (the same transpose).
using TransposeBlock = void (*)(const float* src, int64_t src_row, float* dst, int64_t dst_row);

#if DETECTION_CPU_MULTIVERSION
// In registers: 16 rows loaded, transposed by three rounds of shuffles (AVX-512) or as four 8x8
// blocks (AVX2), 16 rows stored; the scalar loop below takes one load and one store per element.
// GCC 12's AVX-512 headers warn "'__Y' is used uninitialized" inside the shuffle intrinsics
// themselves (a false positive, GCC bug 105593): silenced around this function only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) inline void transpose_block_avx512(const float* src,
                                                                      int64_t src_row, float* dst,
                                                                      int64_t dst_row) {
  __m512 r[16], t[16];
  for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src + j * src_row);
  for (int j = 0; j < 16; j += 2) {  // pairs of rows: elements interleaved by one
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {  // fours of rows: by two
    const __m512d a = _mm512_castps_pd(t[j]), b = _mm512_castps_pd(t[j + 1]);
    const __m512d c = _mm512_castps_pd(t[j + 2]), d = _mm512_castps_pd(t[j + 3]);
    r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int h = 0; h < 16; h += 8) {  // 128-bit lanes, then 256-bit halves
    for (int j = 0; j < 4; ++j) {
      t[h + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0x88);
      t[h + 4 + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * dst_row, r[i]);
}
#pragma GCC diagnostic pop

__attribute__((target("avx2"))) inline void transpose_8x8_avx2(const float* src, int64_t src_row,
                                                               float* dst, int64_t dst_row) {
  __m256 r[8], t[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * src_row);
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 8; j += 4) {
    r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
    r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xee);
    r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xee);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * dst_row, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
    _mm256_storeu_ps(dst + (4 + j) * dst_row, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
  }
}

__attribute__((target("avx2"))) inline void transpose_block_avx2(const float* src, int64_t src_row,
                                                                 float* dst, int64_t dst_row) {
  for (int a = 0; a < 16; a += 8) {
    for (int b = 0; b < 16; b += 8) {
      transpose_8x8_avx2(src + a * src_row + b, src_row, dst + b * dst_row + a, dst_row);
    }
  }
}
#endif

// The block transpose of this CPU (csrc/common/cpu_isa.h's pick) for scalar_t, or nullptr: the
// scalar loop then does every element.
template <typename scalar_t>
TransposeBlock transpose_block() {
#if DETECTION_CPU_MULTIVERSION
  if constexpr (std::is_same_v<scalar_t, float>) {
    switch (cpu_isa()) {
      case CpuIsa::kAvx512:
        return transpose_block_avx512;
      case CpuIsa::kAvx2:
        return transpose_block_avx2;
      default:
        break;
    }
  }
#endif
  return nullptr;
}

// move(planar element, channels-last element) for every element of images [N, C, H, W], in
// the blocked order above: per pixel run, per block of kBlock channels, per pixel, per channel.
// Full float32 blocks of kBlock pixels x kBlock channels go through this CPU's block transpose
// instead, where it has one: a copy in one direction, from the const side (the same result).
template <typename P, typename Q, typename Move>
void for_blocked_elements(Planar<P> planar, ChannelsLast<Q> cl, int64_t N, int64_t C, int64_t H,
                          int64_t W, const Move& move) {
  const TransposeBlock tr = transpose_block<std::remove_const_t<P>>();
  for_pixel_runs(N, C, H, W, [&](int64_t n, int64_t y, int64_t x0, int64_t x1) {
    P* p = planar.data + n * planar.image + y * planar.row;
    Q* q = cl.data + n * cl.image + y * cl.row;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t cn = std::min(kBlock, C - c0);
      P* pc = p + c0 * planar.channel;
      int64_t x = x0;
      if constexpr (std::is_same_v<std::remove_const_t<P>, float>) {
        for (; tr != nullptr && cn == kBlock && x + kBlock <= x1; x += kBlock) {
          if constexpr (std::is_const_v<P>) {
            tr(pc + x, planar.channel, q + x * C + c0, C);
          } else {
            tr(q + x * C + c0, C, pc + x, planar.channel);
          }
        }
      }
      for (; x < x1; ++x) {
        Q* qx = q + x * C + c0;
        for (int64_t j = 0; j < cn; ++j) move(pc[j * planar.channel + x], qx[j]);
      }
    }
  });
}

// dst = src, images [N, C, H, W].
template <typename scalar_t>
void to_planar(ChannelsLast<const scalar_t> src, int64_t N, int64_t C, int64_t H, int64_t W,
               Planar<scalar_t> dst) {
  for_blocked_elements(dst, src, N, C, H, W, [](scalar_t& d, const scalar_t& s) { d = s; });
}

// dst = src, images [N, C, H, W].
template <typename scalar_t>
void to_channels_last(Planar<const scalar_t> src, int64_t N, int64_t C, int64_t H, int64_t W,
                      ChannelsLast<scalar_t> dst) {
  for_blocked_elements(src, dst, N, C, H, W, [](const scalar_t& s, scalar_t& d) { d = s; });
}

// dst = src, both channels-last: per pixel run one contiguous copy of its channels.
template <typename scalar_t>
void copy_channels_last(ChannelsLast<const scalar_t> src, int64_t N, int64_t C, int64_t H,
                        int64_t W, ChannelsLast<scalar_t> dst) {
  for_pixel_runs(N, C, H, W, [&](int64_t n, int64_t y, int64_t x0, int64_t x1) {
    const scalar_t* s = src.data + n * src.image + y * src.row + x0 * C;
    std::copy(s, s + (x1 - x0) * C, dst.data + n * dst.image + y * dst.row + x0 * C);
  });
}

// A contiguous [N, C, H, W] tensor's layout, and a contiguous [N, H, W, C] one's.
template <typename T>
Planar<T> planar(T* data, int64_t C, int64_t H, int64_t W) {
  return Planar<T>{data, C * H * W, H * W, W};
}

template <typename T>
ChannelsLast<T> channels_last(T* data, int64_t C, int64_t H, int64_t W) {
  return ChannelsLast<T>{data, H * W * C, W * C};
}

// [N, C, H, W] -> a contiguous [N, H, W, C] (the same as t.permute({0, 2, 3, 1}).contiguous()):
// a view of t where t is already channels-last in memory, else a new tensor.
inline at::Tensor nchw_to_nhwc(const at::Tensor& t) {
  if (is_channels_last(t)) return t.permute({0, 2, 3, 1});
  const at::Tensor src = t.contiguous();
  const int64_t N = t.size(0), C = t.size(1), H = t.size(2), W = t.size(3);
  at::Tensor dst = at::empty({N, H, W, C}, t.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "nchw_to_nhwc", [&] {
    to_channels_last<scalar_t>(planar(src.const_data_ptr<scalar_t>(), C, H, W), N, C, H, W,
                               channels_last(dst.mutable_data_ptr<scalar_t>(), C, H, W));
  });
  return dst;
}

// [N, H, W, C] -> a new contiguous [N, C, H, W] (the same as t.permute({0, 3, 1, 2}).contiguous()).
inline at::Tensor nhwc_to_nchw(const at::Tensor& t) {
  const at::Tensor src = t.contiguous();
  const int64_t N = t.size(0), H = t.size(1), W = t.size(2), C = t.size(3);
  at::Tensor dst = at::empty({N, C, H, W}, t.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "nhwc_to_nchw", [&] {
    to_planar<scalar_t>(channels_last(src.const_data_ptr<scalar_t>(), C, H, W), N, C, H, W,
                        planar(dst.mutable_data_ptr<scalar_t>(), C, H, W));
  });
  return dst;
}

}  // namespace layout
}  // namespace detection
