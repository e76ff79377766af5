// Host-side helpers of the modulated deformable convolution shared by the CPU and CUDA kernels:
// argument checking (every failure names the argument), output-size arithmetic and the
// results' memory format.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

#include "common/memory_format.h"

namespace detection {
namespace deform_conv {

struct ConvParams {
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, deform_groups;
  int64_t im2col_step;
};

struct ConvShape {
  int64_t batch, channels, height, width;  // input
  int64_t out_channels, kernel_h, kernel_w, out_h, out_w;
};

inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), "modulated_deform_conv2d: ", name,
              " must be on the same device as input (", input.device(), "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "modulated_deform_conv2d: ", name,
              " must have the same dtype as input (", input.scalar_type(), "), got ",
              t.scalar_type());
}

inline void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "modulated_deform_conv2d: ", name, " must have shape ",
              expected, ", got ", t.sizes());
}

// The memory format of the op's output and grad_input: channels-last where the input is
// channels-last in memory and not also contiguous NCHW (as for C = 1 or H = W = 1), the way
// F.conv2d keeps a channels-last input's layout; NCHW otherwise. On every device
// (docs/CONVENTIONS.md).
inline at::MemoryFormat result_memory_format(const at::Tensor& input) {
  return layout::is_channels_last(input) ? at::MemoryFormat::ChannelsLast
                                         : at::MemoryFormat::Contiguous;
}

// Checks every argument of the forward (and, given grad_output, the backward) op and returns
// the problem's shape. Errors are TORCH_CHECK failures naming the offending argument.
inline ConvShape check_args(const at::Tensor& input, const at::Tensor& offset,
                            const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, const ConvParams& p,
                            const at::Tensor* grad_output = nullptr) {
  TORCH_CHECK(input.dim() == 4,
              "modulated_deform_conv2d: input must be a 4-D tensor [N, C, H, W], got ", input.dim(),
              "-D with shape ", input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "modulated_deform_conv2d: input must be a floating-point tensor, got ",
              input.scalar_type());
  TORCH_CHECK(
      weight.dim() == 4,
      "modulated_deform_conv2d: weight must be a 4-D tensor [C_out, C/groups, kh, kw], got ",
      weight.dim(), "-D with shape ", weight.sizes());
  TORCH_CHECK(offset.dim() == 4,
              "modulated_deform_conv2d: offset must be a 4-D tensor [N, 2*dg*kh*kw, Ho, Wo], got ",
              offset.dim(), "-D with shape ", offset.sizes());
  check_same(weight, "weight", input);
  check_same(offset, "offset", input);
  TORCH_CHECK(p.stride_h > 0 && p.stride_w > 0,
              "modulated_deform_conv2d: stride must be positive, got (", p.stride_h, ", ",
              p.stride_w, ")");
  TORCH_CHECK(p.pad_h >= 0 && p.pad_w >= 0,
              "modulated_deform_conv2d: padding must be non-negative, got (", p.pad_h, ", ",
              p.pad_w, ")");
  TORCH_CHECK(p.dilation_h > 0 && p.dilation_w > 0,
              "modulated_deform_conv2d: dilation must be positive, got (", p.dilation_h, ", ",
              p.dilation_w, ")");
  TORCH_CHECK(p.groups > 0, "modulated_deform_conv2d: groups must be positive, got ", p.groups);
  TORCH_CHECK(p.deform_groups > 0, "modulated_deform_conv2d: deform_groups must be positive, got ",
              p.deform_groups);
  TORCH_CHECK(p.im2col_step > 0, "modulated_deform_conv2d: im2col_step must be positive, got ",
              p.im2col_step);

  ConvShape s;
  s.batch = input.size(0);
  s.channels = input.size(1);
  s.height = input.size(2);
  s.width = input.size(3);
  s.out_channels = weight.size(0);
  s.kernel_h = weight.size(2);
  s.kernel_w = weight.size(3);
  TORCH_CHECK(s.kernel_h > 0 && s.kernel_w > 0,
              "modulated_deform_conv2d: weight's kernel size must be positive, got ",
              weight.sizes());
  TORCH_CHECK(s.channels % p.groups == 0, "modulated_deform_conv2d: input channels (", s.channels,
              ") must be divisible by groups (", p.groups, ")");
  TORCH_CHECK(s.out_channels % p.groups == 0, "modulated_deform_conv2d: weight's output channels (",
              s.out_channels, ") must be divisible by groups (", p.groups, ")");
  TORCH_CHECK(weight.size(1) * p.groups == s.channels,
              "modulated_deform_conv2d: weight must have C/groups = ", s.channels / p.groups,
              " input channels per group (input has ", s.channels, " channels, groups=", p.groups,
              "), got weight of shape ", weight.sizes());
  TORCH_CHECK(s.channels % p.deform_groups == 0, "modulated_deform_conv2d: input channels (",
              s.channels, ") must be divisible by deform_groups (", p.deform_groups, ")");
  s.out_h = (s.height + 2 * p.pad_h - (p.dilation_h * (s.kernel_h - 1) + 1)) / p.stride_h + 1;
  s.out_w = (s.width + 2 * p.pad_w - (p.dilation_w * (s.kernel_w - 1) + 1)) / p.stride_w + 1;
  const int64_t eff_h = s.height + 2 * p.pad_h - (p.dilation_h * (s.kernel_h - 1) + 1);
  const int64_t eff_w = s.width + 2 * p.pad_w - (p.dilation_w * (s.kernel_w - 1) + 1);
  TORCH_CHECK(eff_h >= 0 && eff_w >= 0, "modulated_deform_conv2d: the (dilated) kernel (",
              s.kernel_h, "x", s.kernel_w, ", dilation ", p.dilation_h, "x", p.dilation_w,
              ") is larger than the padded input (", s.height + 2 * p.pad_h, "x",
              s.width + 2 * p.pad_w, ")");
  const int64_t kk = s.kernel_h * s.kernel_w;
  check_shape(offset, "offset", {s.batch, 2 * p.deform_groups * kk, s.out_h, s.out_w});
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.dim() == 4,
                "modulated_deform_conv2d: mask must be a 4-D tensor [N, dg*kh*kw, Ho, Wo], got ",
                m.dim(), "-D with shape ", m.sizes());
    check_same(m, "mask", input);
    check_shape(m, "mask", {s.batch, p.deform_groups * kk, s.out_h, s.out_w});
  }
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    check_same(b, "bias", input);
    check_shape(b, "bias", {s.out_channels});
  }
  if (grad_output != nullptr) {
    check_same(*grad_output, "grad_output", input);
    check_shape(*grad_output, "grad_output", {s.batch, s.out_channels, s.out_h, s.out_w});
  }
  return s;
}

}  // namespace deform_conv
}  // namespace detection
