// The operator library `detection`: its ops' schemas (common/op_schemas.h) and its library queries.
//
// Kernels register themselves per backend in their own files
// (csrc/<op>/cpu/*.cpp: TORCH_LIBRARY_IMPL(detection, CPU, m),
//  csrc/<op>/cuda/*.cu:  DETECTION_CUDA_LIBRARY_IMPL(m), i.e. TORCH_LIBRARY_IMPL(detection, CUDA,
//  m) in this library, see common/cuda_compat.cuh), and so does each op's autograd
// (csrc/<op>/<op>_autograd.cpp, on the Autograd key); fake kernels and autocast rules are
// registered from Python (detection/layers/) once this library has loaded.
// Semantics of every op: docs/CONVENTIONS.md, summarised in the Python wrappers.

#include <torch/library.h>

#include <string>

#include "common/cpu_isa.h"
#include "common/cpu_workspace.h"
#include "common/op_schemas.h"

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

// Instruction-set variant of the CPU kernels' sampling loops in this process: "avx512", "avx2"
// or "default" (csrc/common/cpu_isa.h).
std::string cpu_isa_in_use() { return cpu_isa_name(cpu_isa()); }

// The library of the CPU deformable conv's backward GEMMs (one conv group) on this CPU: "blas" or
// "onednn" (csrc/common/cpu_isa.h).
std::string cpu_backward_gemm_in_use() { return cpu_gemm_name(cpu_backward_gemm()); }

// The library of its weight gradient's GEMM for a gradient of `weight_grad_bytes` (one conv
// group): "blas" also where oneDNN takes the rest, above kOneDnnWeightGradMaxBytes.
std::string cpu_weight_grad_gemm_in_use(int64_t weight_grad_bytes) {
  return cpu_gemm_name(cpu_weight_grad_gemm(weight_grad_bytes));
}

// Forces that library for the process ("blas" or "onednn"), or restores the CPU's pick ("auto").
void cpu_set_backward_gemm(const std::string& name) {
  TORCH_CHECK(name == "auto" || name == "blas" || name == "onednn",
              "_cpu_set_backward_gemm: expected 'auto', 'blas' or 'onednn', got '", name, "'");
  const int forced = name == "auto"   ? -1
                     : name == "blas" ? static_cast<int>(CpuGemm::kBlas)
                                      : static_cast<int>(CpuGemm::kOneDnn);
  cpu_backward_gemm_forced().store(forced);
}

// Whether the CPU deformable conv's forward runs fused where a layer qualifies
// (csrc/common/cpu_isa.h), and turning it off or back on for the process.
bool cpu_fused_forward_in_use() { return cpu_fused_forward(); }

void cpu_set_fused_forward(bool enabled) { cpu_fused_forward_enabled().store(enabled); }

// Bytes of CPU scratch the calling thread keeps between kernel calls (common/cpu_workspace.h);
// `release` frees them.
int64_t cpu_workspace(bool release) { return workspace_bytes(release); }

}  // namespace detection

TORCH_LIBRARY(detection, m) {
  m.def("_cuda_version() -> int", &detection::cuda_version);
  m.def("_cpu_isa() -> str", &detection::cpu_isa_in_use);
  m.def("_cpu_backward_gemm() -> str", &detection::cpu_backward_gemm_in_use);
  m.def("_cpu_weight_grad_gemm(int weight_grad_bytes) -> str",
        &detection::cpu_weight_grad_gemm_in_use);
  m.def("_cpu_set_backward_gemm(str name) -> ()", &detection::cpu_set_backward_gemm);
  m.def("_cpu_fused_forward() -> bool", &detection::cpu_fused_forward_in_use);
  m.def("_cpu_set_fused_forward(bool enabled) -> ()", &detection::cpu_set_fused_forward);
  m.def("_cpu_workspace(bool release=False) -> int", &detection::cpu_workspace);
  detection::define_op_schemas(m);
}
