// Device dispatch for the fused pipeline.
#include "fused3d/pipeline.h"

namespace fused3d {

void fused_forward_out(const at::Tensor& x, const FusedLayer& layer, at::Tensor& out) {
  if (x.is_cuda()) return fused_forward_cuda_out(x, layer, out);
  TORCH_CHECK(x.is_cpu(), "fused3d: no fused pipeline for device ", x.device());
  fused_forward_cpu_out(x, layer, out);
}

at::Tensor fused_forward(const at::Tensor& x, const FusedLayer& layer) {
  at::Tensor out = at::empty({x.dim() > 0 ? x.size(0) : 0, layer.out_channels()}, x.options());
  fused_forward_out(x, layer, out);
  return out;
}

}  // namespace fused3d
