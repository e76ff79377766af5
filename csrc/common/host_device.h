// DETECTION_HOST_DEVICE marks the per-element math that the CPU (.cpp) and CUDA (.cu) kernels
// share: one definition, `__host__ __device__` under nvcc and nothing for the host compiler
// (c10's C10_HOST_DEVICE; the CUDA emulation build compiles the .cu files with the host compiler
// too), and always inlined. The CPU kernels call these helpers inside their vectorized channel
// loops, which are compiled once per instruction set under `#pragma GCC target`
// (deform_conv_loops.inc): inlined, a helper's arithmetic becomes part of that loop (vectorized,
// with the loop's FMA contraction), so the CPU results are those of the expressions written out
// in place. An out-of-line call would stop the vectorization.
#pragma once

#include <c10/macros/Macros.h>

#define DETECTION_HOST_DEVICE C10_HOST_DEVICE C10_ALWAYS_INLINE
