// Autograd of modulated deformable RoI pooling on the dispatcher's Autograd key (every device):
// the forward saves its inputs and calls the op below autograd; the backward calls
// `_modulated_deform_roi_pool_backward`, whose own autograd refuses a second derivative. In C++
// rather than `torch.library.register_autograd` (csrc/deform_conv/deform_conv_autograd.cpp says
// why). Fake kernels and autocast rules stay in Python (detection/layers/deform_roi_pool.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace detection {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct PoolParams {
  int64_t pooled_height, pooled_width;
  double spatial_scale;
  int64_t sampling_ratio;
  double gamma;
};

std::optional<at::Tensor> optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

at::Tensor pool_op(const at::Tensor& input, const at::Tensor& rois,
                   const std::optional<at::Tensor>& offset, const std::optional<at::Tensor>& mask,
                   const PoolParams& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("detection::modulated_deform_roi_pool", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, int64_t, int64_t, double, int64_t,
                            double)>();
  return op.call(input, rois, offset, mask, p.pooled_height, p.pooled_width, p.spatial_scale,
                 p.sampling_ratio, p.gamma);
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Grads pool_backward_op(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                       const std::optional<at::Tensor>& offset,
                       const std::optional<at::Tensor>& mask, const PoolParams& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("detection::_modulated_deform_roi_pool_backward", "")
          .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                       const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t,
                       int64_t, double, int64_t, double)>();
  return op.call(grad, input, rois, offset, mask, p.pooled_height, p.pooled_width, p.spatial_scale,
                 p.sampling_ratio, p.gamma);
}

class ModulatedDeformRoIPool : public torch::autograd::Function<ModulatedDeformRoIPool> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& rois,
                            const std::optional<at::Tensor>& offset,
                            const std::optional<at::Tensor>& mask, const PoolParams& p) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward(
        {input, rois, offset.value_or(at::Tensor()), mask.value_or(at::Tensor())});
    ctx->saved_data["pooled_height"] = p.pooled_height;
    ctx->saved_data["pooled_width"] = p.pooled_width;
    ctx->saved_data["spatial_scale"] = p.spatial_scale;
    ctx->saved_data["sampling_ratio"] = p.sampling_ratio;
    ctx->saved_data["gamma"] = p.gamma;
    return pool_op(input, rois, offset, mask, p);
  }

  // One gradient per forward argument: input, rois (none), offset, mask, the parameters (none).
  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::optional<at::Tensor> offset = optional(saved[2]), mask = optional(saved[3]);
    const PoolParams p{
        ctx->saved_data["pooled_height"].toInt(), ctx->saved_data["pooled_width"].toInt(),
        ctx->saved_data["spatial_scale"].toDouble(), ctx->saved_data["sampling_ratio"].toInt(),
        ctx->saved_data["gamma"].toDouble()};
    auto [grad_input, grad_offset, grad_mask] =
        pool_backward_op(grad_outputs[0], saved[0], saved[1], offset, mask, p);
    return {grad_input, at::Tensor(), offset.has_value() ? grad_offset : at::Tensor(),
            mask.has_value() ? grad_mask : at::Tensor(), at::Tensor()};
  }
};

// The backward op as a function of its inputs: a second derivative is refused.
class ModulatedDeformRoIPoolBackward
    : public torch::autograd::Function<ModulatedDeformRoIPoolBackward> {
 public:
  static variable_list forward(AutogradContext* /*ctx*/, const at::Tensor& grad,
                               const at::Tensor& input, const at::Tensor& rois,
                               const std::optional<at::Tensor>& offset,
                               const std::optional<at::Tensor>& mask, const PoolParams& p) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [a, b, c] = pool_backward_op(grad, input, rois, offset, mask, p);
    return {a, b, c};
  }

  static variable_list backward(AutogradContext* /*ctx*/, const variable_list& /*grads*/) {
    TORCH_CHECK(false, "detection::modulated_deform_roi_pool: double backward is not supported");
  }
};

at::Tensor pool_autograd(const at::Tensor& input, const at::Tensor& rois,
                         const std::optional<at::Tensor>& offset,
                         const std::optional<at::Tensor>& mask, int64_t pooled_height,
                         int64_t pooled_width, double spatial_scale, int64_t sampling_ratio,
                         double gamma) {
  return ModulatedDeformRoIPool::apply(
      input, rois, offset, mask,
      PoolParams{pooled_height, pooled_width, spatial_scale, sampling_ratio, gamma});
}

Grads pool_backward_autograd(const at::Tensor& grad, const at::Tensor& input,
                             const at::Tensor& rois, const std::optional<at::Tensor>& offset,
                             const std::optional<at::Tensor>& mask, int64_t pooled_height,
                             int64_t pooled_width, double spatial_scale, int64_t sampling_ratio,
                             double gamma) {
  const variable_list g = ModulatedDeformRoIPoolBackward::apply(
      grad, input, rois, offset, mask,
      PoolParams{pooled_height, pooled_width, spatial_scale, sampling_ratio, gamma});
  return {g[0], g[1], g[2]};
}

}  // namespace
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, Autograd, m) {
  m.impl("modulated_deform_roi_pool", TORCH_FN(detection::pool_autograd));
  m.impl("_modulated_deform_roi_pool_backward", TORCH_FN(detection::pool_backward_autograd));
}
