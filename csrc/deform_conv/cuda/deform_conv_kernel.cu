// CUDA kernels of the modulated deformable convolution (DCNv2; DCNv1 when mask is None).
// Over 350 lines: forward, backward and the deterministic variants share one launch plan.
//
// float32, float64, float16 and bfloat16; sampling arithmetic in at::opmath_type (float for the
// half types). Per chunk of at most im2col_step images: deformable im2col into columns
// [B, C*K, Ho*Wo] (one thread per (image, channel, position), looping over the kernel points),
// then one GEMM per (image, conv group) through ATen. Backward: grad_weight accumulated in
// opmath precision, grad_columns = W^T grad_output, col2im with atomic adds into an opmath
// grad_input buffer (under torch.use_deterministic_algorithms(True): one thread per input plane
// with a fixed summation order instead, no atomics), and the offset/mask gradients with one thread
// per (image, deform group, kernel point, position) summing over the group's channels (no atomics).
// Everything runs on the current stream of the input's device. Semantics: CONVENTIONS.md; the
// per-element math (sample location, masked weights, interpolation, coordinate derivatives) is
// deform_conv_math.h's, the very definitions the CPU kernel calls.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "common/cuda_compat.cuh"
#include "deform_conv/deform_conv_common.h"
#include "deform_conv/deform_conv_math.h"

namespace detection {
namespace deform_conv {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
constexpr int64_t kMaxColumnBytes = int64_t(1) << 30;

int64_t num_blocks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// Sizes the kernels need, passed by value.
struct Dims {
  int64_t channels, height, width, kernel_h, kernel_w, out_h, out_w, deform_groups;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

Dims make_dims(const ConvShape& s, const ConvParams& p) {
  return Dims{s.channels, s.height, s.width,         s.kernel_h,  s.kernel_w,
              s.out_h,    s.out_w,  p.deform_groups, p.stride_h,  p.stride_w,
              p.pad_h,    p.pad_w,  p.dilation_h,    p.dilation_w};
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void sample_position(const Dims& d, const scalar_t* offset_row,
                                                int64_t k, int64_t q, int64_t P, acc_t& y,
                                                acc_t& x) {
  const int64_t i = k / d.kernel_w, j = k % d.kernel_w;
  const int64_t ho = q / d.out_w, wo = q % d.out_w;
  y = static_cast<acc_t>(ho * d.stride_h - d.pad_h + i * d.dilation_h) +
      static_cast<acc_t>(offset_row[2 * k * P + q]);
  x = static_cast<acc_t>(wo * d.stride_w - d.pad_w + j * d.dilation_w) +
      static_cast<acc_t>(offset_row[(2 * k + 1) * P + q]);
}

// columns[b, c*K + k, q] = mask * bilinear(input[b, c], y, x); n = B * C * P threads.
template <typename scalar_t, typename acc_t>
__global__ void im2col_kernel(int64_t n, Dims d, const scalar_t* __restrict__ input,
                              const scalar_t* __restrict__ offset,
                              const scalar_t* __restrict__ mask, scalar_t* __restrict__ columns) {
  const int64_t P = d.out_h * d.out_w, K = d.kernel_h * d.kernel_w;
  const int64_t cpg = d.channels / d.deform_groups;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(blockDim.x) * gridDim.x) {
    const int64_t q = t % P;
    const int64_t bc = t / P;
    const int64_t b = bc / d.channels, c = bc % d.channels, g = c / cpg;
    const scalar_t* plane = input + bc * d.height * d.width;
    const int64_t row = b * d.deform_groups + g;
    const scalar_t* off = offset + row * 2 * K * P;
    const scalar_t* msk = mask != nullptr ? mask + row * K * P : nullptr;
    scalar_t* col = columns + bc * K * P + q;
    for (int64_t k = 0; k < K; ++k) {
      acc_t y, x;
      sample_position<acc_t>(d, off, k, q, P, y, x);
      // outside the band: zero corners with ly = lx = 0, as the CPU kernel's zero block
      acc_t v[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
      int64_t y_low, x_low;
      acc_t ly = acc_t(0), lx = acc_t(0);
      if (locate<acc_t>(y, x, d.height, d.width, y_low, x_low, ly, lx)) {
        corners<acc_t>(plane, d.height, d.width, y_low, x_low, v);
      }
      const acc_t m = msk != nullptr ? static_cast<acc_t>(msk[k * P + q]) : acc_t(1);
      acc_t w[4];
      bilinear_weights<acc_t>(fractions<acc_t>(ly, lx), m, w);
      col[k * P] = static_cast<scalar_t>(weighted_sum<acc_t>(w, v[0], v[1], v[2], v[3]));
    }
  }
}

// Transpose of im2col: atomic adds into grad_input (opmath dtype); n = B * C * K * P threads.
template <typename scalar_t, typename acc_t>
__global__ void col2im_kernel(int64_t n, Dims d, const scalar_t* __restrict__ grad_columns,
                              const scalar_t* __restrict__ offset,
                              const scalar_t* __restrict__ mask, acc_t* __restrict__ grad_input) {
  const int64_t P = d.out_h * d.out_w, K = d.kernel_h * d.kernel_w;
  const int64_t cpg = d.channels / d.deform_groups;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(blockDim.x) * gridDim.x) {
    const int64_t q = t % P;
    const int64_t k = (t / P) % K;
    const int64_t bc = t / (P * K);
    const int64_t b = bc / d.channels, c = bc % d.channels, g = c / cpg;
    const int64_t row = b * d.deform_groups + g;
    acc_t y, x;
    sample_position<acc_t>(d, offset + row * 2 * K * P, k, q, P, y, x);
    int64_t y_low, x_low;
    acc_t ly, lx;
    if (!locate<acc_t>(y, x, d.height, d.width, y_low, x_low, ly, lx)) continue;
    const acc_t grad = static_cast<acc_t>(grad_columns[t]);
    const acc_t m = mask != nullptr ? static_cast<acc_t>(mask[(row * K + k) * P + q]) : acc_t(1);
    acc_t w[4];
    bilinear_weights<acc_t>(fractions<acc_t>(ly, lx), m, w);
    acc_t* plane = grad_input + bc * d.height * d.width;
    for (int corner = 0; corner < 4; ++corner) {
      const int64_t yy = y_low + corner / 2, xx = x_low + corner % 2;
      if (yy >= 0 && yy < d.height && xx >= 0 && xx < d.width) {
        gpuAtomicAdd(plane + yy * d.width + xx, w[corner] * grad);
      }
    }
  }
}

// Deterministic col2im (torch.use_deterministic_algorithms(True)): one thread per input plane
// (image, channel) walks its kernel points and positions in order with plain adds, so the
// summation order is fixed. A deformable sample can land anywhere in the plane, so the gather
// form has no bounded set of contributors; owning the plane is the simple atomic-free scheme.
// Slower than the atomic kernel (parallel over B*C threads only); n = B * C threads.
template <typename scalar_t, typename acc_t>
__global__ void col2im_plane_kernel(int64_t n, Dims d, const scalar_t* __restrict__ grad_columns,
                                    const scalar_t* __restrict__ offset,
                                    const scalar_t* __restrict__ mask,
                                    acc_t* __restrict__ grad_input) {
  const int64_t P = d.out_h * d.out_w, K = d.kernel_h * d.kernel_w;
  const int64_t cpg = d.channels / d.deform_groups;
  for (int64_t bc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; bc < n;
       bc += int64_t(blockDim.x) * gridDim.x) {
    const int64_t b = bc / d.channels, c = bc % d.channels, g = c / cpg;
    const int64_t row = b * d.deform_groups + g;
    acc_t* plane = grad_input + bc * d.height * d.width;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* gc = grad_columns + (bc * K + k) * P;
      for (int64_t q = 0; q < P; ++q) {
        acc_t y, x;
        sample_position<acc_t>(d, offset + row * 2 * K * P, k, q, P, y, x);
        int64_t y_low, x_low;
        acc_t ly, lx;
        if (!locate<acc_t>(y, x, d.height, d.width, y_low, x_low, ly, lx)) continue;
        const acc_t grad = static_cast<acc_t>(gc[q]);
        const acc_t m =
            mask != nullptr ? static_cast<acc_t>(mask[(row * K + k) * P + q]) : acc_t(1);
        acc_t w[4];
        bilinear_weights<acc_t>(fractions<acc_t>(ly, lx), m, w);
        for (int corner = 0; corner < 4; ++corner) {
          const int64_t yy = y_low + corner / 2, xx = x_low + corner % 2;
          if (yy >= 0 && yy < d.height && xx >= 0 && xx < d.width) {
            plane[yy * d.width + xx] += w[corner] * grad;
          }
        }
      }
    }
  }
}

// grad_offset and grad_mask; n = B * dg * K * P threads, each summing over its group's channels.
template <typename scalar_t, typename acc_t>
__global__ void coordinate_grad_kernel(int64_t n, Dims d, const scalar_t* __restrict__ grad_columns,
                                       const scalar_t* __restrict__ input,
                                       const scalar_t* __restrict__ offset,
                                       const scalar_t* __restrict__ mask,
                                       scalar_t* __restrict__ grad_offset,
                                       scalar_t* __restrict__ grad_mask) {
  const int64_t P = d.out_h * d.out_w, K = d.kernel_h * d.kernel_w;
  const int64_t cpg = d.channels / d.deform_groups;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n;
       t += int64_t(blockDim.x) * gridDim.x) {
    const int64_t q = t % P;
    const int64_t k = (t / P) % K;
    const int64_t row = t / (P * K);  // b * dg + g
    const int64_t b = row / d.deform_groups, g = row % d.deform_groups;
    acc_t y, x;
    sample_position<acc_t>(d, offset + row * 2 * K * P, k, q, P, y, x);
    int64_t y_low, x_low;
    acc_t ly, lx;
    acc_t acc_y = acc_t(0), acc_x = acc_t(0), acc_v = acc_t(0);
    if (locate<acc_t>(y, x, d.height, d.width, y_low, x_low, ly, lx)) {
      const Fractions<acc_t> f = fractions<acc_t>(ly, lx);
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const int64_t bc = b * d.channels + c;
        const scalar_t* plane = input + bc * d.height * d.width;
        const acc_t gq = static_cast<acc_t>(grad_columns[(bc * K + k) * P + q]);
        acc_t v[4];
        corners<acc_t>(plane, d.height, d.width, y_low, x_low, v);
        acc_t dy, dx;
        coordinate_gradient<acc_t>(f, v[0], v[1], v[2], v[3], dy, dx);
        acc_y += gq * dy;
        acc_x += gq * dx;
        acc_v += gq * interpolate<acc_t>(f, v[0], v[1], v[2], v[3]);
      }
    }
    const acc_t m = mask != nullptr ? static_cast<acc_t>(mask[(row * K + k) * P + q]) : acc_t(1);
    grad_offset[(row * 2 * K + 2 * k) * P + q] = static_cast<scalar_t>(m * acc_y);
    grad_offset[(row * 2 * K + 2 * k + 1) * P + q] = static_cast<scalar_t>(m * acc_x);
    if (grad_mask != nullptr) grad_mask[(row * K + k) * P + q] = static_cast<scalar_t>(acc_v);
  }
}

ConvParams make_params(int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                       int64_t dilation_h, int64_t dilation_w, int64_t groups,
                       int64_t deform_groups, int64_t im2col_step) {
  return ConvParams{stride_h,   stride_w, pad_h,         pad_w,      dilation_h,
                    dilation_w, groups,   deform_groups, im2col_step};
}

int64_t chunk_size(const ConvShape& s, const ConvParams& p, int64_t element_size) {
  const int64_t per_image =
      std::max<int64_t>(1, s.channels * s.kernel_h * s.kernel_w * s.out_h * s.out_w * element_size);
  // never more images than the batch has: the buffer is allocated at the chunk size
  return std::max<int64_t>(
      1, std::min<int64_t>({p.im2col_step, kMaxColumnBytes / per_image, s.batch}));
}

at::ScalarType opmath_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

void im2col(const at::Tensor& input, const at::Tensor& offset,
            const std::optional<at::Tensor>& mask, int64_t b0, int64_t batch, const Dims& d,
            at::Tensor& columns) {
  const int64_t P = d.out_h * d.out_w, K = d.kernel_h * d.kernel_w;
  const int64_t n = batch * d.channels * P;
  if (n == 0) return;
  auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "modulated_deform_conv2d_im2col_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* mask_ptr =
            mask.has_value() ? mask->data_ptr<scalar_t>() + b0 * d.deform_groups * K * P : nullptr;
        cuda::launch(im2col_kernel<scalar_t, acc_t>, num_blocks(n), kThreads, 0, stream, n, d,
                     input.data_ptr<scalar_t>() + b0 * d.channels * d.height * d.width,
                     offset.data_ptr<scalar_t>() + b0 * d.deform_groups * 2 * K * P, mask_ptr,
                     columns.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

at::Tensor forward_cuda(const at::Tensor& input_, const at::Tensor& offset_,
                        const std::optional<at::Tensor>& mask_, const at::Tensor& weight_,
                        const std::optional<at::Tensor>& bias_, int64_t stride_h, int64_t stride_w,
                        int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                        int64_t groups, int64_t deform_groups, int64_t im2col_step) {
  const ConvParams p = make_params(stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
                                   deform_groups, im2col_step);
  const ConvShape s = check_args(input_, offset_, mask_, weight_, bias_, p);
  TORCH_CHECK(cuda::on_device(input_),
              "modulated_deform_conv2d: input must be a CUDA tensor here, got ", input_.device());
  cuda::DeviceGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor weight = weight_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  at::Tensor output = at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, input.options());
  if (s.batch == 0) return output;

  const Dims d = make_dims(s, p);
  const int64_t G = p.groups, K = s.kernel_h * s.kernel_w, P = s.out_h * s.out_w;
  const int64_t cout_g = s.out_channels / G, ck_g = s.channels / G * K;
  const at::Tensor w = weight.view({G, cout_g, ck_g});
  const int64_t chunk = chunk_size(s, p, input.element_size());
  at::Tensor columns = at::empty({chunk, s.channels * K, P}, input.options());
  for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
    const int64_t batch = std::min(chunk, s.batch - b0);
    im2col(input, offset, mask, b0, batch, d, columns);
    for (int64_t b = 0; b < batch; ++b) {
      const at::Tensor out_b = output[b0 + b].view({G, cout_g, P});
      const at::Tensor col_b = columns[b].view({G, ck_g, P});
      for (int64_t g = 0; g < G; ++g) {
        at::Tensor out_bg = out_b[g];
        at::mm_out(out_bg, w[g], col_b[g]);
      }
    }
  }
  if (bias_.has_value()) output.add_(bias_->view({1, -1, 1, 1}));
  // the kernels write NCHW; a channels-last input gets a channels-last output, as on the CPU
  return output.contiguous(result_memory_format(input_));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_,
    const std::optional<at::Tensor>& mask_, const at::Tensor& weight_,
    const std::optional<at::Tensor>& bias_, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t groups, int64_t deform_groups,
    int64_t im2col_step) {
  const ConvParams p = make_params(stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
                                   deform_groups, im2col_step);
  const ConvShape s = check_args(input_, offset_, mask_, weight_, bias_, p, &grad_output_);
  TORCH_CHECK(cuda::on_device(input_),
              "modulated_deform_conv2d: input must be a CUDA tensor here, got ", input_.device());
  cuda::DeviceGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor weight = weight_.contiguous(), grad_output = grad_output_.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_.has_value()) mask = mask_->contiguous();
  const at::ScalarType acc_type = opmath_dtype(input.scalar_type());

  at::Tensor grad_input_acc = at::zeros(input.sizes(), input.options().dtype(acc_type));
  // zeros: with 0 input channels no kernel writes them (the CPU kernel returns zeros too)
  at::Tensor grad_offset = at::zeros_like(offset, at::MemoryFormat::Contiguous);
  at::Tensor grad_mask = mask.has_value() ? at::zeros_like(*mask, at::MemoryFormat::Contiguous)
                                          : at::empty({0}, input.options());
  at::Tensor grad_weight_acc = at::zeros(weight.sizes(), weight.options().dtype(acc_type));
  at::Tensor grad_bias = bias_.has_value()
                             ? grad_output.sum({0, 2, 3}, false, acc_type).to(input.scalar_type())
                             : at::empty({0}, input.options());

  if (s.batch > 0) {
    const Dims d = make_dims(s, p);
    const int64_t G = p.groups, K = s.kernel_h * s.kernel_w, P = s.out_h * s.out_w;
    const int64_t cout_g = s.out_channels / G, ck_g = s.channels / G * K;
    const at::Tensor w = weight.view({G, cout_g, ck_g});
    const at::Tensor gw = grad_weight_acc.view({G, cout_g, ck_g});
    const int64_t chunk = chunk_size(s, p, input.element_size());
    at::Tensor columns = at::empty({chunk, s.channels * K, P}, input.options());
    auto stream = cuda::current_stream();
    for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
      const int64_t batch = std::min(chunk, s.batch - b0);
      im2col(input, offset, mask, b0, batch, d, columns);
      for (int64_t b = 0; b < batch; ++b) {
        const at::Tensor go_b = grad_output[b0 + b].view({G, cout_g, P});
        const at::Tensor col_b = columns[b].view({G, ck_g, P});
        for (int64_t g = 0; g < G; ++g) {
          gw[g].add_(at::mm(go_b[g], col_b[g].t()));
          at::Tensor col_bg = col_b[g];
          at::mm_out(col_bg, w[g].t(), go_b[g]);
        }
      }
      const int64_t n_col = batch * s.channels * K * P;
      const int64_t n_coord = batch * p.deform_groups * K * P;
      if (n_col == 0) continue;
      AT_DISPATCH_FLOATING_TYPES_AND2(
          at::kHalf, at::kBFloat16, input.scalar_type(), "modulated_deform_conv2d_backward_cuda",
          [&] {
            using acc_t = at::opmath_type<scalar_t>;
            const scalar_t* off_ptr =
                offset.data_ptr<scalar_t>() + b0 * p.deform_groups * 2 * K * P;
            const scalar_t* mask_ptr =
                mask.has_value() ? mask->data_ptr<scalar_t>() + b0 * p.deform_groups * K * P
                                 : nullptr;
            acc_t* grad_in_ptr =
                grad_input_acc.data_ptr<acc_t>() + b0 * s.channels * s.height * s.width;
            if (at::globalContext().deterministicAlgorithms()) {
              const int64_t n_planes = batch * s.channels;
              cuda::launch(col2im_plane_kernel<scalar_t, acc_t>, num_blocks(n_planes), kThreads, 0,
                           stream, n_planes, d, columns.data_ptr<scalar_t>(), off_ptr, mask_ptr,
                           grad_in_ptr);
            } else {
              cuda::launch(col2im_kernel<scalar_t, acc_t>, num_blocks(n_col), kThreads, 0, stream,
                           n_col, d, columns.data_ptr<scalar_t>(), off_ptr, mask_ptr, grad_in_ptr);
            }
            C10_CUDA_KERNEL_LAUNCH_CHECK();
            cuda::launch(
                coordinate_grad_kernel<scalar_t, acc_t>, num_blocks(n_coord), kThreads, 0, stream,
                n_coord, d, columns.data_ptr<scalar_t>(),
                input.data_ptr<scalar_t>() + b0 * s.channels * s.height * s.width, off_ptr,
                mask_ptr, grad_offset.data_ptr<scalar_t>() + b0 * p.deform_groups * 2 * K * P,
                mask.has_value() ? grad_mask.data_ptr<scalar_t>() + b0 * p.deform_groups * K * P
                                 : nullptr);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
    }
  }
  return {grad_input_acc.to(input.scalar_type(), false, false, result_memory_format(input_)),
          grad_offset, grad_mask, grad_weight_acc.to(weight.scalar_type()), grad_bias};
}

}  // namespace
}  // namespace deform_conv
}  // namespace detection

DETECTION_CUDA_LIBRARY_IMPL(m) {
  m.impl("modulated_deform_conv2d", TORCH_FN(detection::deform_conv::forward_cuda));
  m.impl("_modulated_deform_conv2d_backward", TORCH_FN(detection::deform_conv::backward_cuda));
}
