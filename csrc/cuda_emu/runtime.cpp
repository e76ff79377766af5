// The CUDA emulator's grid runner (see cuda_emu.h) and the `detection_cuda_emu` operator library
// of the test-only build detection._C_cuda_emu: the schemas of `detection` (common/op_schemas.h),
// implemented for the CPU dispatch key by the CUDA kernel files compiled for the host.
#include "cuda_emu/cuda_emu.h"

#include <ucontext.h>

#include <cstdlib>
#include <exception>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "common/op_schemas.h"

namespace detection {
namespace cuda_emu {
namespace {

constexpr size_t kStackBytes = size_t(256) << 10;  // per CUDA thread alive at a barrier
constexpr size_t kMaxDynamicSharedBytes = size_t(48) << 10;
constexpr uint64_t kOrderSeed = 0x5eed;

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  bool started = false;
  bool done = false;
};

// The state of the launch running on this CPU thread.
struct Launch {
  void (*run)(void*) = nullptr;
  void* ctx = nullptr;
  ucontext_t scheduler;
  Fiber* current = nullptr;
  std::exception_ptr error;
};

thread_local Launch* running = nullptr;
thread_local uint64_t launches = 0;  // the order of blocks and threads changes with every launch
thread_local std::vector<std::unique_ptr<char[]>> stack_pool;  // free stacks, reused

char* take_stack() {
  if (stack_pool.empty()) return new char[kStackBytes];
  char* s = stack_pool.back().release();
  stack_pool.pop_back();
  return s;
}

void give_back_stack(char* s) { stack_pool.emplace_back(s); }

void fiber_entry() {
  Launch* l = running;
  try {
    l->run(l->ctx);
  } catch (...) {
    if (!l->error) l->error = std::current_exception();
  }
  l->current->done = true;
  // returns to l->scheduler through uc_link
}

void check_limits(dim3 grid, dim3 block, size_t shared_bytes) {
  TORCH_CHECK(block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 && block.y <= 1024 &&
                  block.z <= 64 && uint64_t(block.x) * block.y * block.z <= 1024,
              "CUDA emulation: invalid block (", block.x, ", ", block.y, ", ", block.z,
              "): a GPU runs 1 to 1024 threads per block (x, y <= 1024, z <= 64)");
  TORCH_CHECK(grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 &&
                  grid.z >= 1 && grid.z <= 65535,
              "CUDA emulation: invalid grid (", grid.x, ", ", grid.y, ", ", grid.z,
              "): a GPU launches x in 1..2^31-1, y and z in 1..65535 blocks");
  TORCH_CHECK(shared_bytes <= kMaxDynamicSharedBytes, "CUDA emulation: ", shared_bytes,
              " bytes of dynamic shared memory requested, more than the 48 KiB a block gets "
              "without opting in");
}

// Runs the threads of the block blockIdx as fibers, round by round, in the order `threads`: a
// round resumes every live thread until it reaches the next __syncthreads() or ends.
void run_block(Launch& l, std::vector<Fiber>& fibers, const std::vector<unsigned>& threads,
               dim3 block) {
  const unsigned n = block.x * block.y * block.z;
  for (Fiber& f : fibers) f = Fiber();
  unsigned live = n;
  while (live > 0) {
    for (const unsigned t : threads) {
      Fiber& f = fibers[t];
      if (f.done) continue;
      threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
      l.current = &f;
      if (!f.started) {
        f.started = true;
        f.stack = take_stack();
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = kStackBytes;
        f.context.uc_link = &l.scheduler;
        makecontext(&f.context, fiber_entry, 0);
      }
      swapcontext(&l.scheduler, &f.context);
      l.current = nullptr;
      if (f.done) {
        give_back_stack(f.stack);
        f.stack = nullptr;
        --live;
      }
    }
    // every live thread of the block now waits at the same barrier (or the block has ended)
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, void (*run)(void*), void* ctx) {
  check_limits(grid, block, shared_bytes);
  TORCH_CHECK(running == nullptr, "CUDA emulation: a kernel launched from inside a kernel");
  Launch l;
  l.run = run;
  l.ctx = ctx;
  running = &l;
  gridDim = grid;
  blockDim = block;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<uint64_t> order(blocks);
  std::iota(order.begin(), order.end(), uint64_t(0));
  std::mt19937_64 rng(kOrderSeed + launches++);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<Fiber> fibers(block.x * block.y * block.z);
  std::vector<unsigned> threads(fibers.size());
  std::iota(threads.begin(), threads.end(), 0u);
  for (const uint64_t b : order) {
    blockIdx =
        uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
              static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y))};
    std::shuffle(threads.begin(), threads.end(), rng);
    run_block(l, fibers, threads, block);
    if (l.error) break;
  }
  running = nullptr;
  if (l.error) std::rethrow_exception(l.error);
}

void syncthreads() {
  Launch* l = running;
  TORCH_CHECK(l != nullptr && l->current != nullptr,
              "CUDA emulation: __syncthreads() outside a kernel");
  Fiber* self = l->current;
  swapcontext(&self->context, &l->scheduler);
}

}  // namespace cuda_emu
}  // namespace detection

TORCH_LIBRARY(detection_cuda_emu, m) { detection::define_op_schemas(m); }
