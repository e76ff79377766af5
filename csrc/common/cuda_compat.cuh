// What the CUDA kernel files use from the CUDA runtime and from ATen's CUDA headers, in one
// place, so that the same .cu sources build two ways:
//  * by nvcc for the GPU, into the product library detection._C (registered for the CUDA
//    dispatch key of the `detection` operator library);
//  * by the host C++ compiler with DETECTION_CUDA_EMULATION defined, into the test-only library
//    detection._C_cuda_emu (csrc/cuda_emu/: every block and thread of every launch run on the
//    CPU, registered for the CPU key of the `detection_cuda_emu` operator library).
// The kernel files include this header instead of the CUDA headers and use, outside the kernel
// bodies: cuda::launch (never a bare <<<...>>>), cuda::current_stream, cuda::DeviceGuard,
// cuda::on_device, C10_CUDA_KERNEL_LAUNCH_CHECK and DETECTION_CUDA_LIBRARY_IMPL; inside them
// the usual CUDA names (blockIdx, threadIdx, __shared__, __syncthreads, gpuAtomicAdd).
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <utility>

#ifdef DETECTION_CUDA_EMULATION

#include "cuda_emu/cuda_emu.h"

#else  // the real CUDA build

#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace detection {
namespace cuda {

using DeviceGuard = c10::cuda::CUDAGuard;

inline cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }

// Whether `t` lives where this build's kernels read (a CUDA device).
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }

// kernel<<<grid, block, shared_bytes, stream>>>(args...): the one way the kernel files launch.
template <typename Kernel, typename... Args>
inline void launch(Kernel kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   Args&&... args) {
  // clang-format reads the launch's >>> as three closing angle brackets in a .cuh file
  // clang-format off
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  // clang-format on
}

}  // namespace cuda
}  // namespace detection

#define DETECTION_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(detection, CUDA, m)

#endif
