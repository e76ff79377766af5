// Kernels that check the CUDA emulator itself (tests/layers/test_cuda_emulation.py), registered
// as torch.ops.detection_cuda_emu._emu_* next to the emulated ops: barriers, the order of
// blocks and threads, and the launch limits.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/cuda_compat.cuh"

namespace detection {
namespace {

// out[t] = the value thread (t + 1) % n wrote to shared memory before the barrier: right only
// when every thread of the block reached the barrier before any passed it. Two rounds, so that
// the second barrier and shared memory reused after it are checked too.
__global__ void barrier_kernel(int64_t salt, int64_t* __restrict__ out) {
  __shared__ int64_t buf[1024];
  const int n = blockDim.x, t = threadIdx.x;
  buf[t] = salt + t;
  __syncthreads();
  const int64_t first = buf[(t + 1) % n];
  __syncthreads();
  buf[t] = 2 * salt + t;
  __syncthreads();
  out[t] = first + buf[(t + n - 1) % n];
}

// out[linear thread id] = the rank of this thread among all threads of the launch in the order
// the emulator ran them.
__global__ void order_kernel(int64_t* __restrict__ counter, int64_t* __restrict__ out) {
  const int64_t block =
      blockIdx.x + int64_t(gridDim.x) * (blockIdx.y + int64_t(gridDim.y) * blockIdx.z);
  const int64_t thread =
      threadIdx.x + int64_t(blockDim.x) * (threadIdx.y + int64_t(blockDim.y) * threadIdx.z);
  const int64_t threads = int64_t(blockDim.x) * blockDim.y * blockDim.z;
  out[block * threads + thread] = *counter;
  *counter += 1;
}

__global__ void empty_kernel() {}

at::Tensor barrier(int64_t threads, int64_t salt) {
  auto out = at::full({threads}, -1, at::kLong);
  cuda::launch(barrier_kernel, 1, static_cast<unsigned>(threads), 0, cuda::current_stream(), salt,
               out.mutable_data_ptr<int64_t>());
  return out;
}

at::Tensor order(at::IntArrayRef grid, at::IntArrayRef block) {
  TORCH_CHECK(grid.size() == 3 && block.size() == 3, "_emu_order: grid and block are 3 ints");
  auto counter = at::zeros({1}, at::kLong);
  auto out =
      at::full({grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2]}, -1, at::kLong);
  cuda::launch(order_kernel,
               dim3(static_cast<unsigned>(grid[0]), static_cast<unsigned>(grid[1]),
                    static_cast<unsigned>(grid[2])),
               dim3(static_cast<unsigned>(block[0]), static_cast<unsigned>(block[1]),
                    static_cast<unsigned>(block[2])),
               0, cuda::current_stream(), counter.mutable_data_ptr<int64_t>(),
               out.mutable_data_ptr<int64_t>());
  return out;
}

void launch_empty(at::IntArrayRef grid, at::IntArrayRef block, int64_t shared_bytes) {
  TORCH_CHECK(grid.size() == 3 && block.size() == 3, "_emu_launch: grid and block are 3 ints");
  cuda::launch(empty_kernel,
               dim3(static_cast<unsigned>(grid[0]), static_cast<unsigned>(grid[1]),
                    static_cast<unsigned>(grid[2])),
               dim3(static_cast<unsigned>(block[0]), static_cast<unsigned>(block[1]),
                    static_cast<unsigned>(block[2])),
               static_cast<size_t>(shared_bytes), cuda::current_stream());
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_FRAGMENT(detection_cuda_emu, m) {
  m.def("_emu_barrier(int threads, int salt) -> Tensor", &detection::barrier);
  m.def("_emu_order(int[] grid, int[] block) -> Tensor", &detection::order);
  m.def("_emu_launch(int[] grid, int[] block, int shared_bytes) -> ()", &detection::launch_empty);
}
