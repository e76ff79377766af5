// The CUDA emulation: what csrc/common/cuda_compat.cuh provides to the kernel files when they
// are compiled by the host C++ compiler into the test-only library detection._C_cuda_emu
// (DETECTION_CUDA_EMULATION, setup.py). Tensors are CPU tensors; a launch runs every block and
// every thread of its grid on the calling CPU thread (csrc/cuda_emu/runtime.cpp):
//  * blocks, and the threads of each block, in a shuffled order, different for every launch
//    (seeded: the same sequence of launches runs in the same orders in every process), so a
//    kernel that depends on the order of blocks or threads fails, and atomic scatters sum in a
//    different order from run to run, as on a GPU;
//  * each CUDA thread on a fiber of its own (ucontext), switched only at __syncthreads(): a
//    block's threads all reach a barrier before any of them passes it, so block-cooperative
//    kernels run as on a GPU; kernels without barriers cost one fiber start per thread;
//  * __shared__ arrays are static thread-local storage, shared by the threads of a block (blocks
//    run one after another);
//  * the launch is checked against the limits of a real GPU (throws c10::Error): 1..1024
//    threads per block (x, y <= 1024, z <= 64), grid x in 1..2^31-1, y and z in 1..65535, at
//    most 48 KiB of dynamic shared memory (static __shared__ arrays are checked by nvcc/ptxas in
//    the real build, which CI compiles);
//  * gpuAtomicAdd is a plain add (one thread runs at a time), for every element type.
// half and bfloat16 arithmetic is c10::Half / c10::BFloat16's host arithmetic (conversions to
// and from float, as the kernels do all arithmetic in at::opmath_type).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

using cudaStream_t = struct CUstream_st*;

// The built-in variables of the running CUDA thread (set by the emulator before it runs or
// resumes a thread).
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

// device-side min / max of the CUDA math library (int and floating overloads)
using std::max;
using std::min;

namespace detection {
namespace cuda_emu {

// Runs kernel body `run(ctx)` for every thread of the grid (see the top of this file).
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, void (*run)(void*), void* ctx);

// The barrier of the running block; an error outside a kernel.
void syncthreads();

}  // namespace cuda_emu

namespace cuda {

// The emulated device is the CPU: the guard checks that the tensors are CPU tensors.
class DeviceGuard {
 public:
  explicit DeviceGuard(const c10::Device& device) {
    TORCH_CHECK(device.is_cpu(), "CUDA emulation: tensors must be CPU tensors, got ", device);
  }
};

inline cudaStream_t current_stream() { return nullptr; }

inline bool on_device(const at::Tensor& t) { return t.is_cpu(); }

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t /*stream*/,
            Args&&... args) {
  // every CUDA thread gets its own copies of the arguments, converted to the kernel's parameter
  // types, as a real launch does
  auto body = [&]() { kernel(args...); };
  using Body = decltype(body);
  cuda_emu::run_grid(
      grid, block, shared_bytes, [](void* ctx) { (*static_cast<Body*>(ctx))(); }, &body);
}

}  // namespace cuda
}  // namespace detection

inline void __syncthreads() { detection::cuda_emu::syncthreads(); }

// Atomic adds: one emulated thread runs at a time, so a plain read-modify-write is atomic.
// Returns the old value, as gpuAtomicAdd does.
template <typename T>
inline T emulated_atomic_add(T* address, T value) {
  const T old = *address;
  *address = static_cast<T>(old + value);
  return old;
}
inline float gpuAtomicAdd(float* address, float value) {
  return emulated_atomic_add(address, value);
}
inline double gpuAtomicAdd(double* address, double value) {
  return emulated_atomic_add(address, value);
}
inline c10::Half gpuAtomicAdd(c10::Half* address, c10::Half value) {
  return emulated_atomic_add(address, value);
}
inline c10::BFloat16 gpuAtomicAdd(c10::BFloat16* address, c10::BFloat16 value) {
  return emulated_atomic_add(address, value);
}

// Launch errors are raised by the launch itself.
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

#define DETECTION_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(detection_cuda_emu, CPU, m)
