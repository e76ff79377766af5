// Which memory layout a 4-d tensor has, for the CPU and CUDA kernels alike (ATen only: no
// instruction-set code, so nvcc can include it too).
#pragma once

#include <ATen/ATen.h>

namespace detection {
namespace layout {

// Whether a 4-d tensor is channels-last in memory and not also contiguous NCHW (as for C = 1 or
// H = W = 1): the CPU kernels then read it in place instead of through an NCHW copy, and the
// deformable conv returns its results channels-last (deform_conv_common.h).
inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) &&
         !t.is_contiguous(at::MemoryFormat::Contiguous);
}

}  // namespace layout
}  // namespace detection
