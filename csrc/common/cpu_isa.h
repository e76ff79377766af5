// Instruction-set variants of the CPU kernels' sampling loops, and the library of their GEMMs.
//
// The extension is compiled for the baseline x86-64 ISA (SSE2) so that one build runs on every
// machine; its hot loops (bilinear gathers and scatters over contiguous channels) are compiled
// again for AVX2+FMA and for AVX-512 (GCC on x86-64: `#pragma GCC target` around a textual
// include of the loops in a namespace of their own, so no inline function is shared between
// variants), and the variant is picked once per process at run time. The pick follows ATen's
// own (`torch.backends.cpu.get_cpu_capability()`, which honours the ATEN_CPU_CAPABILITY
// environment variable: `ATEN_CPU_CAPABILITY=default` runs the baseline loops) and what the CPU
// reports. Results of the variants differ by rounding only (FMA contraction).
#pragma once

#include <ATen/Version.h>

#include <atomic>

#include <string>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DETECTION_CPU_MULTIVERSION 1
#else
#define DETECTION_CPU_MULTIVERSION 0
#endif

// Calls `fn` (unqualified; with template arguments, none of them with a comma) from the
// namespace isa_avx512, isa_avx2 or isa_default of the calling scope, by cpu_isa(): the variants a
// kernel file builds by including its loops three times (deform_conv_kernel.cpp,
// roi_pool_cpu.h). Without multiversioning only isa_default exists.
#if DETECTION_CPU_MULTIVERSION
#define DETECTION_CPU_ISA_CALL(fn, ...) \
  switch (::detection::cpu_isa()) {     \
    case ::detection::CpuIsa::kAvx512:  \
      isa_avx512::fn(__VA_ARGS__);      \
      break;                            \
    case ::detection::CpuIsa::kAvx2:    \
      isa_avx2::fn(__VA_ARGS__);        \
      break;                            \
    default:                            \
      isa_default::fn(__VA_ARGS__);     \
  }
#else
#define DETECTION_CPU_ISA_CALL(fn, ...) isa_default::fn(__VA_ARGS__)
#endif

namespace detection {

enum class CpuIsa { kDefault, kAvx2, kAvx512 };

inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
#if DETECTION_CPU_MULTIVERSION
    const std::string aten = at::get_cpu_capability();
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vl");
    if (aten == "AVX512" && avx512) return CpuIsa::kAvx512;
    if ((aten == "AVX512" || aten == "AVX2") && avx2) return CpuIsa::kAvx2;
#endif
    return CpuIsa::kDefault;
  }();
  return isa;
}

// Which library multiplies the deformable conv's backward GEMMs on this CPU (one conv group):
// ATen's BLAS (`at::mm`, MKL's sgemm on x86-64) or oneDNN (a 1x1 convolution_backward). MKL runs
// its AVX-512 kernels on Intel CPUs only (on AMD ones its AVX2 kernels: half the FMA rate where
// 512-bit units are full width, the same rate on Zen 4, whose AVX-512 runs on 256-bit units:
// benchmarks/fma_peak.c gives 116-118 GFLOP/s per core either way, and MKL's sgemm reaches 87-100
// of them at one thread, twenty-eighth round), while oneDNN's convolution_backward runs its AVX-512
// kernels on both. Measured (RESULTS.md): BLAS faster on an AVX2 AMD EPYC and on an AVX-512 Intel
// Xeon (with AMX), oneDNN faster on an AVX-512 AMD one (recorded as Zen 5); on a Zen 4 EPYC (family
// 25, model 17) the two tie at one thread (BLAS 0.89-0.97x the op's backward at 16-32 channels,
// 1.02-1.07x at 64-128) and oneDNN wins at two (BLAS 1.18-1.30x: its GEMMs take as long as oneDNN's
// there, but the op's own loops between them 1.6x longer, in a profile at 32 channels;
// twenty-seventh and twenty-eighth rounds), but for the weight gradient at 256-512 channels
// (cpu_weight_grad_gemm below). So oneDNN only where the CPU has AVX-512 and is not Intel's.
enum class CpuGemm { kBlas, kOneDnn };

inline CpuGemm cpu_backward_gemm_pick() {
  static const CpuGemm gemm = [] {
#if DETECTION_CPU_MULTIVERSION
    __builtin_cpu_init();
    if (cpu_isa() == CpuIsa::kAvx512 && !__builtin_cpu_is("intel")) return CpuGemm::kOneDnn;
#endif
    return CpuGemm::kBlas;
  }();
  return gemm;
}

// A library forced for the process (`_cpu_set_backward_gemm`, for benchmarks and tests: the two
// differ by float rounding only), or -1 for the pick above.
inline std::atomic<int>& cpu_backward_gemm_forced() {
  static std::atomic<int> forced{-1};
  return forced;
}

inline CpuGemm cpu_backward_gemm() {
  const int forced = cpu_backward_gemm_forced().load(std::memory_order_relaxed);
  return forced < 0 ? cpu_backward_gemm_pick() : static_cast<CpuGemm>(forced);
}

// The weight gradient's GEMM (grad_weight += grad_rows^T x columns, one per column tile) on CPUs
// where oneDNN multiplies the rest: oneDNN's 1x1 backward-by-weights falls behind MKL's sgemm
// (AVX2 kernels and all) once the gradient outgrows an L2 cache, so BLAS takes it above
// kOneDnnWeightGradMaxBytes. On the Zen 4 EPYC (1 MB of L2 per core; benchmarks/RESULTS.md,
// twenty-second round), the gradient of one tile at 352-4096 rows: BLAS 0.72-0.87x oneDNN's
// time at 512 channels (9.4 MB) and 0.85-0.99x at 256 (2.4 MB) at one thread, 0.77-0.92x and
// 0.95-1.03x at two; at 128 channels (0.6 MB) oneDNN is ahead from 704 rows on, at 64 from 1408
// (BLAS 1.04-1.26x). Smaller GEMMs (352 rows; the shapes demo's 16-32 channels) are BLAS's again,
// by a margin the training step did not show (nineteenth round). Where BLAS is the pick it takes
// both GEMMs whatever the size.
constexpr int64_t kOneDnnWeightGradMaxBytes = int64_t(1) << 20;

inline CpuGemm cpu_weight_grad_gemm(int64_t weight_grad_bytes) {
  return cpu_backward_gemm() == CpuGemm::kOneDnn && weight_grad_bytes <= kOneDnnWeightGradMaxBytes
             ? CpuGemm::kOneDnn
             : CpuGemm::kBlas;
}

// Whether the deformable conv's forward may run fused (sampling and GEMM in one pass over blocks
// of output positions, our own kernel; csrc/deform_conv/cpu/deform_conv_loops.inc, im2col_gemm)
// rather than through a column tile and oneDNN: where the AVX2 or AVX-512 loops run (its
// accumulators take 12 of the 16 or 24 of the 32 vector registers) and it is not turned off
// (`_cpu_set_fused_forward(false)`, for benchmarks and tests: the two differ by float rounding
// only). Which layers qualify is the kernel's choice (deform_conv_kernel.cpp, fused_forward).
inline std::atomic<bool>& cpu_fused_forward_enabled() {
  static std::atomic<bool> enabled{true};
  return enabled;
}

inline bool cpu_fused_forward() {
  return cpu_isa() != CpuIsa::kDefault &&
         cpu_fused_forward_enabled().load(std::memory_order_relaxed);
}

inline const char* cpu_gemm_name(CpuGemm gemm) {
  return gemm == CpuGemm::kOneDnn ? "onednn" : "blas";
}

inline const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    default:
      return "default";
  }
}

}  // namespace detection
