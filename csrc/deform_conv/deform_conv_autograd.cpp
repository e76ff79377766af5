// Autograd of the modulated deformable convolution, on the dispatcher's Autograd key (every
// device), as torchvision registers its ops' autograd: the forward saves its inputs and calls the
// op below autograd; the backward calls `_modulated_deform_conv2d_backward`, whose own autograd
// refuses a second derivative. In C++ rather than `torch.library.register_autograd`, whose
// Python kernel every call of the op passed through, with or without gradients (about 20 us
// without, 110 us with, per call on the 2-core VM; benchmarks/RESULTS.md, twenty-eighth round).
// Fake kernels and autocast rules stay in Python (detection/layers/deform_conv.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace detection {
namespace deform_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The op's integer arguments after the tensors, in schema order.
struct Params {
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, deform_groups,
      im2col_step;
};

// Params as one saved list (AutogradContext::saved_data), and back.
void save_params(AutogradContext* ctx, const Params& p) {
  ctx->saved_data["params"] =
      std::vector<int64_t>{p.stride_h,   p.stride_w, p.pad_h,         p.pad_w,      p.dilation_h,
                           p.dilation_w, p.groups,   p.deform_groups, p.im2col_step};
}

Params saved_params(AutogradContext* ctx) {
  const std::vector<int64_t> v = ctx->saved_data["params"].toIntVector();
  return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
}

std::optional<at::Tensor> optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

at::Tensor forward_op(const at::Tensor& input, const at::Tensor& offset,
                      const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("detection::modulated_deform_conv2d", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            const at::Tensor&, const std::optional<at::Tensor>&, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t)>();
  return op.call(input, offset, mask, weight, bias, p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                 p.dilation_h, p.dilation_w, p.groups, p.deform_groups, p.im2col_step);
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads backward_op(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
                  const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, const Params& p) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("detection::_modulated_deform_conv2d_backward", "")
                       .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const std::optional<at::Tensor>&, const at::Tensor&,
                                    const std::optional<at::Tensor>&, int64_t, int64_t, int64_t,
                                    int64_t, int64_t, int64_t, int64_t, int64_t, int64_t)>();
  return op.call(grad_output, input, offset, mask, weight, bias, p.stride_h, p.stride_w, p.pad_h,
                 p.pad_w, p.dilation_h, p.dilation_w, p.groups, p.deform_groups, p.im2col_step);
}

class ModulatedDeformConv2d : public torch::autograd::Function<ModulatedDeformConv2d> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& offset,
                            const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const Params& p) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward(
        {input, offset, mask.value_or(at::Tensor()), weight, bias.value_or(at::Tensor())});
    save_params(ctx, p);
    return forward_op(input, offset, mask, weight, bias, p);
  }

  // One gradient per forward argument: input, offset, mask, weight, bias, the parameters (none).
  static variable_list backward(AutogradContext* ctx, const variable_list& grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::optional<at::Tensor> mask = optional(saved[2]), bias = optional(saved[4]);
    auto [grad_input, grad_offset, grad_mask, grad_weight, grad_bias] =
        backward_op(grad_outputs[0], saved[0], saved[1], mask, saved[3], bias, saved_params(ctx));
    return {grad_input,
            grad_offset,
            mask.has_value() ? grad_mask : at::Tensor(),
            grad_weight,
            bias.has_value() ? grad_bias : at::Tensor(),
            at::Tensor()};
  }
};

// The backward op as a function of its inputs: a second derivative is refused.
class ModulatedDeformConv2dBackward
    : public torch::autograd::Function<ModulatedDeformConv2dBackward> {
 public:
  static variable_list forward(AutogradContext* /*ctx*/, const at::Tensor& grad_output,
                               const at::Tensor& input, const at::Tensor& offset,
                               const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const Params& p) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [a, b, c, d, e] = backward_op(grad_output, input, offset, mask, weight, bias, p);
    return {a, b, c, d, e};
  }

  static variable_list backward(AutogradContext* /*ctx*/, const variable_list& /*grads*/) {
    TORCH_CHECK(false,
                "modulated_deform_conv2d: double backward (gradients of gradients) is not "
                "supported");
  }
};

at::Tensor forward_autograd(const at::Tensor& input, const at::Tensor& offset,
                            const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t stride_h,
                            int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                            int64_t dilation_w, int64_t groups, int64_t deform_groups,
                            int64_t im2col_step) {
  return ModulatedDeformConv2d::apply(input, offset, mask, weight, bias,
                                      Params{stride_h, stride_w, pad_h, pad_w, dilation_h,
                                             dilation_w, groups, deform_groups, im2col_step});
}

Grads backward_autograd(const at::Tensor& grad_output, const at::Tensor& input,
                        const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                        const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        int64_t dilation_h, int64_t dilation_w, int64_t groups,
                        int64_t deform_groups, int64_t im2col_step) {
  const variable_list g =
      ModulatedDeformConv2dBackward::apply(grad_output, input, offset, mask, weight, bias,
                                           Params{stride_h, stride_w, pad_h, pad_w, dilation_h,
                                                  dilation_w, groups, deform_groups, im2col_step});
  return {g[0], g[1], g[2], g[3], g[4]};
}

}  // namespace
}  // namespace deform_conv
}  // namespace detection

TORCH_LIBRARY_IMPL(detection, Autograd, m) {
  m.impl("modulated_deform_conv2d", TORCH_FN(detection::deform_conv::forward_autograd));
  m.impl("_modulated_deform_conv2d_backward", TORCH_FN(detection::deform_conv::backward_autograd));
}
