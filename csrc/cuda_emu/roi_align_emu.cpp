// roi_align/cuda/roi_align_kernel.cu compiled by the host C++ compiler for the CUDA emulation
// library (cuda_emu.h).
#include "roi_align/cuda/roi_align_kernel.cu"
