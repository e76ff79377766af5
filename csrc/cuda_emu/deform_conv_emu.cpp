// deform_conv/cuda/deform_conv_kernel.cu compiled by the host C++ compiler for the CUDA emulation
// library (cuda_emu.h).
#include "deform_conv/cuda/deform_conv_kernel.cu"
