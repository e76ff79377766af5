// Instruction-set variants of the CPU kernels' sampling loops.
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

#include <string>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DETECTION_CPU_MULTIVERSION 1
#else
#define DETECTION_CPU_MULTIVERSION 0
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
