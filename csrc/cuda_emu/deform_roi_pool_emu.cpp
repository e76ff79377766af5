// deform_roi_pool/cuda/deform_roi_pool_kernel.cu compiled by the host C++ compiler for the CUDA
// emulation library (cuda_emu.h).
#include "deform_roi_pool/cuda/deform_roi_pool_kernel.cu"
