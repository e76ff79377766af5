// nms/cuda/nms_kernel.cu compiled by the host C++ compiler for the CUDA emulation library
// (cuda_emu.h).
#include "nms/cuda/nms_kernel.cu"
