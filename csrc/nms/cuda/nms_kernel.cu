// detection::nms, CUDA (float32, float64, float16, bfloat16; IoU in at::opmath_type).
// Boxes are sorted by score (stable, descending); a 2-D grid of 64-box column blocks computes
// for every box i a bit mask of the later boxes it suppresses (IoU > threshold); one block then
// walks the boxes in order on the GPU, keeping a box unless an earlier kept box suppressed it.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "common/cuda_compat.cuh"
#include "nms/nms_checks.h"
#include "nms/nms_math.h"

namespace detection {
namespace {

constexpr int kBlockBits = 64;  // boxes per mask word

// The IoU (nms_math.h, the CPU kernel's definition) is computed in acc_t and compared with the
// double threshold, as the CPU kernel does (a float threshold rounded up, e.g. 0.3f > 0.3, would
// keep a box whose IoU equals it exactly).
template <typename acc_t, typename scalar_t>
__device__ inline bool suppresses(const scalar_t* a, const scalar_t* b, double threshold) {
  const acc_t ax1 = static_cast<acc_t>(a[0]), ay1 = static_cast<acc_t>(a[1]);
  const acc_t ax2 = static_cast<acc_t>(a[2]), ay2 = static_cast<acc_t>(a[3]);
  const acc_t bx1 = static_cast<acc_t>(b[0]), by1 = static_cast<acc_t>(b[1]);
  const acc_t bx2 = static_cast<acc_t>(b[2]), by2 = static_cast<acc_t>(b[3]);
  const acc_t iou = nms::iou(ax1, ay1, ax2, ay2, nms::box_area(ax1, ay1, ax2, ay2), bx1, by1, bx2,
                             by2, nms::box_area(bx1, by1, bx2, by2));
  return static_cast<double>(iou) > threshold;
}

// mask[i * col_blocks + cb]: bit k set when sorted box i suppresses sorted box cb * 64 + k.
template <typename scalar_t>
__global__ void nms_mask_kernel(int n, double iou_threshold, const scalar_t* __restrict__ boxes,
                                unsigned long long* __restrict__ mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const int row_block = blockIdx.y, col_block = blockIdx.x, t = threadIdx.x;
  if (row_block > col_block) return;
  const int row_size = min(n - row_block * kBlockBits, kBlockBits);
  const int col_size = min(n - col_block * kBlockBits, kBlockBits);
  __shared__ scalar_t col_boxes[kBlockBits * 4];
  if (t < col_size) {
    for (int k = 0; k < 4; ++k) col_boxes[t * 4 + k] = boxes[(col_block * kBlockBits + t) * 4 + k];
  }
  __syncthreads();
  if (t >= row_size) return;
  const int i = row_block * kBlockBits + t;
  const scalar_t* box = boxes + i * 4;
  unsigned long long bits = 0;
  const int start = row_block == col_block ? t + 1 : 0;
  for (int j = start; j < col_size; ++j) {
    if (suppresses<acc_t, scalar_t>(box, col_boxes + j * 4, iou_threshold)) bits |= 1ULL << j;
  }
  const int col_blocks = (n + kBlockBits - 1) / kBlockBits;
  mask[static_cast<int64_t>(i) * col_blocks + col_block] = bits;
}

// Single block: walk the sorted boxes; `removed` (col_blocks words, global scratch) holds the
// union of the masks of the kept boxes. Within one column block each later word j is updated by a
// single thread, and words are read only after the barrier that starts the next block.
__global__ void nms_gather_kernel(int n, const unsigned long long* __restrict__ mask,
                                  unsigned long long* __restrict__ removed,
                                  bool* __restrict__ keep) {
  const int col_blocks = (n + kBlockBits - 1) / kBlockBits;
  for (int cb = 0; cb < col_blocks; ++cb) {
    __syncthreads();
    unsigned long long current = removed[cb];
    const int base = cb * kBlockBits;
    const int size = min(n - base, kBlockBits);
    for (int k = 0; k < size; ++k) {
      if (current & (1ULL << k)) continue;
      const int i = base + k;
      if (threadIdx.x == 0) keep[i] = true;
      const unsigned long long* row = mask + static_cast<int64_t>(i) * col_blocks;
      current |= row[cb];
      for (int j = cb + 1 + threadIdx.x; j < col_blocks; j += blockDim.x) removed[j] |= row[j];
    }
  }
}

at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  nms_check_args(dets, scores);
  cuda::DeviceGuard device_guard(dets.device());
  const int64_t n = dets.size(0);
  if (n == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  TORCH_CHECK(n < (int64_t{1} << 31) / kBlockBits, "nms: too many boxes (", n, ")");
  const auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto boxes_sorted = dets.index_select(0, order).contiguous();
  const int col_blocks = static_cast<int>((n + kBlockBits - 1) / kBlockBits);
  auto mask = at::empty({n * col_blocks}, dets.options().dtype(at::kLong));
  auto removed = at::zeros({col_blocks}, dets.options().dtype(at::kLong));
  auto keep = at::zeros({n}, dets.options().dtype(at::kBool));
  cudaStream_t stream = cuda::current_stream();
  const dim3 blocks(col_blocks, col_blocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dets.scalar_type(), "nms_cuda", [&] {
    cuda::launch(nms_mask_kernel<scalar_t>, blocks, kBlockBits, 0, stream, static_cast<int>(n),
                 iou_threshold, boxes_sorted.const_data_ptr<scalar_t>(),
                 reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  cuda::launch(nms_gather_kernel, 1, 256, 0, stream, static_cast<int>(n),
               reinterpret_cast<const unsigned long long*>(mask.const_data_ptr<int64_t>()),
               reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
               keep.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return order.masked_select(keep);
}

}  // namespace
}  // namespace detection

DETECTION_CUDA_LIBRARY_IMPL(m) { m.impl("nms", &detection::nms_cuda); }
