// Scratch buffers of the CPU kernels, kept per thread from one call to the next.
//
// A kernel that allocates megabytes of scratch on every call (padded images, sampling plans,
// column tiles) gets them from glibc as fresh pages whenever the allocation is above malloc's mmap
// threshold or the heap top was trimmed since the last call: a page fault and a kernel zeroing
// per 4 KiB, every call. At the shapes demo's res5 layer (128 channels on 16x22, batch 4) that
// was a quarter of the deformable conv's backward (31 -> 22 ms with malloc told to keep its
// memory). A slot here is one buffer per calling thread that only grows, so repeated calls
// reuse warm pages; oneDNN keeps its scratchpad the same way.
//
// A tensor from `workspace` is valid until the same thread asks for the same slot again: use it
// within one call, never return it. Slots are per kernel family (enum below); the memory stays
// held by the thread for its lifetime (at most the largest request per slot), or until
// `workspace_bytes(true)` (`detection._ext.cpu_workspace_bytes(release=True)`) frees it.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>

#include <array>

namespace detection {

enum WorkspaceSlot : int {
  kDcnPadded = 0,   // deformable conv: padded channels-last images
  kDcnPlan,         // deformable conv: sampling plan
  kDcnColumns,      // deformable conv: a tile of columns
  kDcnGradColumns,  // deformable conv: their gradient
  kDcnGradPadded,   // deformable conv: the padded gradient of the images
  kDcnPartial,      // deformable conv: coordinate-gradient partial sums
  kDcnGradRows,     // deformable conv: a tile of the output gradient as rows [positions, C_out]
  kDcnRows,         // deformable conv: a tile of the output as rows [positions, C_out]
  kWorkspaceSlots
};

// The calling thread's buffers, one per slot (undefined until first asked for).
inline std::array<at::Tensor, kWorkspaceSlots>& workspace_buffers() {
  thread_local std::array<at::Tensor, kWorkspaceSlots> buffers;
  return buffers;
}

// A contiguous tensor of `sizes` and `options` (CPU) in `slot`'s buffer, uninitialised.
inline at::Tensor workspace(WorkspaceSlot slot, at::IntArrayRef sizes,
                            const at::TensorOptions& options) {
  const int64_t n = c10::multiply_integers(sizes);
  at::Tensor& buffer = workspace_buffers()[slot];
  if (!buffer.defined() || buffer.scalar_type() != options.dtype().toScalarType() ||
      buffer.numel() < n) {
    buffer = at::Tensor();  // release the old one before allocating the larger one
    buffer = at::empty({n}, options);
  }
  return buffer.narrow(0, 0, n).view(sizes);
}

// Bytes held by the calling thread's buffers; with `release`, frees them (after counting).
inline int64_t workspace_bytes(bool release) {
  int64_t bytes = 0;
  for (at::Tensor& buffer : workspace_buffers()) {
    if (buffer.defined()) bytes += buffer.numel() * buffer.element_size();
    if (release) buffer = at::Tensor();
  }
  return bytes;
}

}  // namespace detection
