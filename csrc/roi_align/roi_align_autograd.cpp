// Autograd of RoIAlign on the dispatcher's Autograd key (every device), as torchvision's: the
// forward saves the RoIs and the input's shape and calls the op below autograd; the backward calls
// `_roi_align_backward`, whose own autograd refuses a second derivative. In C++ rather than
// `torch.library.register_autograd` (csrc/deform_conv/deform_conv_autograd.cpp says why). Fake
// kernels and autocast rules stay in Python (detection/layers/roi_align.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace detection {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct RoIAlignParams {
  double spatial_scale;
  int64_t pooled_height, pooled_width, sampling_ratio;
  bool aligned;
};

at::Tensor roi_align_op(const at::Tensor& input, const at::Tensor& rois, const RoIAlignParams& p) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("detection::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t,
                                         int64_t, int64_t, bool)>();
  return op.call(input, rois, p.spatial_scale, p.pooled_height, p.pooled_width, p.sampling_ratio,
                 p.aligned);
}

at::Tensor roi_align_backward_op(const at::Tensor& grad, const at::Tensor& rois,
                                 const RoIAlignParams& p, int64_t batch_size, int64_t channels,
                                 int64_t height, int64_t width) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("detection::_roi_align_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, bool)>();
  return op.call(grad, rois, p.spatial_scale, p.pooled_height, p.pooled_width, batch_size, channels,
                 height, width, p.sampling_ratio, p.aligned);
}

// The input's dimensions, saved for the backward (N, C, H, W).
constexpr const char* kDims[] = {"batch_size", "channels", "height", "width"};

// A size as an int: under symbolic shapes (torch.compile) this guards on its value, as the int
// arguments of `_roi_align_backward`'s schema require.
int64_t concrete(const c10::SymInt& size) { return size.guard_int(__FILE__, __LINE__); }

class RoIAlign : public torch::autograd::Function<RoIAlign> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& rois,
                            const RoIAlignParams& p) {
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor output = roi_align_op(input, rois, p);  // checks the input first (4-D)
    ctx->save_for_backward({rois});
    ctx->saved_data["spatial_scale"] = p.spatial_scale;
    ctx->saved_data["pooled_height"] = p.pooled_height;
    ctx->saved_data["pooled_width"] = p.pooled_width;
    ctx->saved_data["sampling_ratio"] = p.sampling_ratio;
    ctx->saved_data["aligned"] = p.aligned;
    for (int64_t d = 0; d < 4; ++d) ctx->saved_data[kDims[d]] = input.sym_size(d);
    return output;
  }

  // One gradient per forward argument: input, rois (none), the parameters (none).
  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const RoIAlignParams p{
        ctx->saved_data["spatial_scale"].toDouble(), ctx->saved_data["pooled_height"].toInt(),
        ctx->saved_data["pooled_width"].toInt(), ctx->saved_data["sampling_ratio"].toInt(),
        ctx->saved_data["aligned"].toBool()};
    int64_t shape[4];
    for (int64_t d = 0; d < 4; ++d) shape[d] = concrete(ctx->saved_data[kDims[d]].toSymInt());
    const at::Tensor grad_input = roi_align_backward_op(
        grad_outputs[0], ctx->get_saved_variables()[0], p, shape[0], shape[1], shape[2], shape[3]);
    return {grad_input, at::Tensor(), at::Tensor()};
  }
};

// The backward op as a function of its inputs: a second derivative is refused.
class RoIAlignBackward : public torch::autograd::Function<RoIAlignBackward> {
 public:
  static at::Tensor forward(AutogradContext* /*ctx*/, const at::Tensor& grad,
                            const at::Tensor& rois, const RoIAlignParams& p, int64_t batch_size,
                            int64_t channels, int64_t height, int64_t width) {
    at::AutoDispatchBelowADInplaceOrView below;
    return roi_align_backward_op(grad, rois, p, batch_size, channels, height, width);
  }

  static variable_list backward(AutogradContext* /*ctx*/, const variable_list& /*grads*/) {
    TORCH_CHECK(false, "detection::roi_align: double backward is not supported");
  }
};

at::Tensor roi_align_autograd(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                              bool aligned) {
  return RoIAlign::apply(
      input, rois,
      RoIAlignParams{spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned});
}

at::Tensor roi_align_backward_autograd(const at::Tensor& grad, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height,
                                       int64_t pooled_width, int64_t batch_size, int64_t channels,
                                       int64_t height, int64_t width, int64_t sampling_ratio,
                                       bool aligned) {
  return RoIAlignBackward::apply(
      grad, rois,
      RoIAlignParams{spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned},
      batch_size, channels, height, width);
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, Autograd, m) {
  m.impl("roi_align", TORCH_FN(detection::roi_align_autograd));
  m.impl("_roi_align_backward", TORCH_FN(detection::roi_align_backward_autograd));
}
