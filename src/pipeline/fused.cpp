// Device dispatch for the fused pipeline.
#include "fused3d/pipeline.h"

namespace fused3d {

void fused_forward_out(const at::Tensor& x, const FusedLayer& layer, Precision precision, at::Tensor& out) {
  if (x.is_cuda()) return fused_forward_cuda_out(x, layer, precision, out);
  TORCH_CHECK(x.is_cpu(), "fused3d: no fused pipeline for device ", x.device());
  // The CPU has no TF32: both precisions compute in float32 there.
  fused_forward_cpu_out(x, layer, out);
}

Plan fused_plan(const at::Tensor& x, const FusedLayer& layer, Precision precision) {
  TORCH_CHECK(x.is_cuda(), "fused3d: plans are made for CUDA inputs, got one on ", x.device());
  const std::string why = forward_reason(x, layer, x.device());
  TORCH_CHECK(why.empty(), "fused3d: ", why);
  return make_plan(layer, x.contiguous(), precision);
}

std::string fused_kernel_name(const at::Tensor& x, const FusedLayer& layer, Precision precision) {
  if (x.is_cuda()) return describe(fused_plan(x, layer, precision), x.scalar_type());
  return x.scalar_type() == at::kFloat ? "CPU (float32)" : "CPU (" + dtype_name(x.scalar_type()) + " in, float32 arithmetic)";
}

at::Tensor fused_forward(const at::Tensor& x, const FusedLayer& layer, Precision precision) {
  at::Tensor out = at::empty({x.dim() > 0 ? x.size(0) : 0, layer.out_channels()}, x.options());
  fused_forward_out(x, layer, precision, out);
  return out;
}

}  // namespace fused3d
