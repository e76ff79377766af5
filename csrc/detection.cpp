// The operator library `detection`: every op's schema, in one place.
//
// Kernels register themselves per backend in their own files
// (csrc/<op>/cpu/*.cpp: TORCH_LIBRARY_IMPL(detection, CPU, m),
//  csrc/<op>/cuda/*.cu:  TORCH_LIBRARY_IMPL(detection, CUDA, m)); autograd, fake kernels and
// autocast rules are registered from Python (detection/layers/) once this library has loaded.
// Semantics of every op: ../shared/reference/CONVENTIONS.md, summarised in the Python wrappers.

#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda.h>
#endif

namespace detection {

// CUDA runtime version the library was compiled with, or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

}  // namespace detection

TORCH_LIBRARY(detection, m) {
  m.def("_cuda_version() -> int", &detection::cuda_version);
  // Schemas of the ops are added below by their owners (deformable conv, RoI ops).
}
