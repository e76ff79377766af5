/* One core's float32 FMA throughput, in GFLOP/s (two per FMA lane), for each vector width the
 * CPU has: AVX-512 (16 lanes) and AVX2 (8 lanes). Twelve independent chains of fused
 * multiply-adds, so that two pipelines of four cycles' latency stay full. It is the bound a GEMM
 * or a sampling loop on that core can approach: the fraction of it an op reaches says how much
 * its kernel leaves. The two widths differ by 2x on CPUs with full-width 512-bit units (Intel's
 * AVX-512 server cores) and not where AVX-512 runs on 256-bit units (AMD Zen 4), which decides
 * what a library's AVX2 kernels lose there (benchmarks/RESULTS.md, twenty-eighth round).
 * benchmarks/run.py compiles and runs it for its environment line.
 *
 *     cc -O2 -o fma_peak fma_peak.c && ./fma_peak
 *
 * Prints one line per width, "avx512 115.2" (the best of 5 runs of 0.02-0.1 s each), or exits 1
 * with an error line (not x86-64, or no AVX2 and FMA). */
#include <stdio.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
enum { kChains = 12, kRuns = 5 };
static const long kIters = 10000000;

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One function per vector width (GCC vector extensions under the width's target): kChains
 * accumulators a0..a11, each a = a * b + c per iteration (one fused multiply-add: the compilers
 * contract it where the target has FMA), summed at the end so that every chain is kept. */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define INIT(i) vec a##i = zero + (float)(i + 2); /* none at 1, a fixed point of a * b + c */
#define STEP(i) a##i = a##i * b + c;
#define ADD(i) s += a##i;
#define DEFINE_CHAINS(name, isa, bytes)                                 \
  __attribute__((target(isa))) static float name(long iters) {          \
    typedef float vec __attribute__((vector_size(bytes)));              \
    const vec zero = {0}, b = zero + 0.999999f, c = zero + 1e-6f;       \
    CHAINS(INIT)                                                        \
    for (long k = 0; k < iters; k++) {                                  \
      CHAINS(STEP)                                                      \
    }                                                                   \
    vec s = zero;                                                       \
    CHAINS(ADD)                                                         \
    float sum = 0;                                                      \
    for (unsigned l = 0; l < (bytes) / sizeof(float); l++) sum += s[l]; \
    return sum;                                                         \
  }

DEFINE_CHAINS(chains512, "avx512f", 64)
DEFINE_CHAINS(chains256, "avx2,fma", 32)

static volatile float sink;

/* The best of kRuns runs of `chains`, in GFLOP/s for `lanes` lanes per vector. */
static double peak(float (*chains)(long), int lanes) {
  chains(kIters / 10); /* warm-up: clocks up, code paged in */
  double best = 0;
  for (int r = 0; r < kRuns; r++) {
    const double t0 = seconds();
    sink = chains(kIters);
    const double gflops = 2.0 * lanes * kChains * kIters / (seconds() - t0) / 1e9;
    if (gflops > best) best = gflops;
  }
  return best;
}

int main(void) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    fprintf(stderr, "error: the CPU has no AVX2 and FMA\n");
    return 1;
  }
  if (__builtin_cpu_supports("avx512f")) printf("avx512 %.1f\n", peak(chains512, 16));
  printf("avx2 %.1f\n", peak(chains256, 8));
  return 0;
}

#else
int main(void) {
  fprintf(stderr, "error: x86-64 only (GCC or clang)\n");
  return 1;
}
#endif
