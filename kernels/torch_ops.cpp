// The fused forward as PyTorch operators, for the Python extension (tools/fused3d_torch.py
// compiles this file with the rest of kernels/ through load_inline): torch.ops.fused3d.forward, and
// torch.ops.fused3d.kernel, which says in plan.h's words which kernel forward runs for the same
// arguments. Registered operators, not pybind functions, so torch.compile traces forward without a
// graph break (its fake implementation lives in the Python module) and CUDA graphs can capture it.
#include "fused_layer.h"
#include "plan.h"

#include <torch/library.h>

#include <array>
#include <optional>
#include <string>

namespace fused3d {
namespace {

FusedLayer layer_of(const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                    const std::optional<at::Tensor>& gamma, const std::optional<at::Tensor>& beta, int64_t groups,
                    double eps, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                    int64_t conv_groups) {
  FusedLayer layer;
  layer.weight = weight;
  layer.bias = bias.value_or(at::Tensor());
  layer.gamma = gamma.value_or(at::Tensor());
  layer.beta = beta.value_or(at::Tensor());
  layer.norm_groups = groups;
  layer.eps = eps;
  const auto triple = [](at::IntArrayRef v, const char* name) {
    TORCH_CHECK(v.size() == 3, "fused3d.forward: ", name, " must have 3 entries, got ", v.size());
    return std::array<int64_t, 3>{v[0], v[1], v[2]};
  };
  layer.stride = triple(stride, "stride");
  layer.padding = triple(padding, "padding");
  layer.dilation = triple(dilation, "dilation");
  layer.conv_groups = conv_groups;
  return layer;
}

Precision precision_of(c10::string_view precision) {
  TORCH_CHECK(precision == "accurate" || precision == "tf32",
              "fused3d.forward: precision must be 'accurate' or 'tf32', got '", std::string(precision), "'");
  return precision == "tf32" ? Precision::kTF32 : Precision::kAccurate;
}

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const std::optional<at::Tensor>& gamma, const std::optional<at::Tensor>& beta,
                        int64_t groups, double eps, c10::string_view precision, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t conv_groups) {
  const Precision mode = precision_of(precision);
  return fused_forward_cuda(x, layer_of(weight, bias, gamma, beta, groups, eps, stride, padding, dilation, conv_groups),
                            mode);
}

std::string kernel_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const std::optional<at::Tensor>& gamma, const std::optional<at::Tensor>& beta, int64_t groups,
                        double eps, c10::string_view precision, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, int64_t conv_groups) {
  const Precision mode = precision_of(precision);
  const FusedLayer layer = layer_of(weight, bias, gamma, beta, groups, eps, stride, padding, dilation, conv_groups);
  const std::string why = forward_reason(x, layer, x.device());
  TORCH_CHECK(why.empty(), "fused3d: ", why);
  return describe(make_plan(layer, x.contiguous(), mode), x.scalar_type());
}

}  // namespace
}  // namespace fused3d

// Both operators take the same arguments.
#define FUSED3D_OP_ARGUMENTS                                                                            \
  "(Tensor x, Tensor weight, Tensor? bias, Tensor? gamma, Tensor? beta, int groups, float eps, "      \
  "str precision=\"accurate\", int[3] stride=[1, 1, 1], int[3] padding=[0, 0, 0], int[3] dilation=[1, 1, 1], " \
  "int conv_groups=1)"

TORCH_LIBRARY(fused3d, m) {
  m.def("forward" FUSED3D_OP_ARGUMENTS " -> Tensor");
  m.def("kernel" FUSED3D_OP_ARGUMENTS " -> str");
}

TORCH_LIBRARY_IMPL(fused3d, CUDA, m) {
  m.impl("forward", &fused3d::forward_cuda);
  m.impl("kernel", &fused3d::kernel_cuda);
}
