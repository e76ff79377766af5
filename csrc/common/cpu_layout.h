// Planar (NCHW) <-> channels-last copies of the CPU kernels, blocked so that every cache line on
// the strided side is touched once.
//
// The kernels work channels-last (SIMD over contiguous channels) on NCHW tensors, so they convert
// on the way in and out. ATen's copy of a permuted tensor (`t.permute(...).contiguous()`) walks
// the destination in order and reads the source at a stride of C elements: every source line is
// read C / 16 times, from farther than the cache once an image passes it. One thread, float32, on
// a 2-core Intel Xeon VM (AVX-512): channels-last -> NCHW of [2, 128, 100, 136] took 26.6 ms and
// of [2, 1024, 50, 68] 50.7 ms, against 1.2 and 3.5 ms for a plain copy of the same tensors, and
// 2.4 and 11 ms with these loops (benchmarks/RESULTS.md, fifteenth round: the deformable conv's
// input gradient at the ResNet-50 res3 shape was a tenth of the op's forward plus backward).
// A task is a run of pixels of one image row (about 16 K elements); within it, blocks of kBlock
// channels: per pixel one contiguous run of kBlock channels on the channels-last side against
// kBlock rows written (or read) in order on the planar side. Plain copies: nothing depends on the
// thread count.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ceil_div.h>

#include <algorithm>
#include <cstdint>

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

// move(planar element, channels-last element) for every element of images [N, C, H, W], in
// the blocked order above: per pixel run, per block of kBlock channels, per pixel, per channel.
template <typename P, typename Q, typename Move>
void for_blocked_elements(Planar<P> planar, ChannelsLast<Q> cl, int64_t N, int64_t C, int64_t H,
                          int64_t W, const Move& move) {
  for_pixel_runs(N, C, H, W, [&](int64_t n, int64_t y, int64_t x0, int64_t x1) {
    P* p = planar.data + n * planar.image + y * planar.row;
    Q* q = cl.data + n * cl.image + y * cl.row;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t cn = std::min(kBlock, C - c0);
      P* pc = p + c0 * planar.channel;
      for (int64_t x = x0; x < x1; ++x) {
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

// Whether a 4-d tensor is channels-last in memory and not also contiguous NCHW (as for C = 1 or
// H = W = 1): the kernels then read it in place instead of through an NCHW copy.
inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         !t.is_contiguous(at::MemoryFormat::Contiguous);
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
