// The CUDA entry: checks (with shapes in the messages) -> plan (plan.h) -> packed weights (cached
// per model and kernel family) -> for the kernel-4x4x4 tensor-core kernels the per-sample pivots
// and biases (k4_sample_terms.h) -> the moments kernel the plan names, then the GroupNorm-mean epilogue kernel (or, in the plan's
// epilogue_in_kernel case, the moments kernel's own last block), all on the current stream.
#include "conv3d_depthwise.h"
#include "conv3d_general.h"
#include "conv3d_igemm.h"
#include "conv3d_igemm_box.h"
#include "conv3d_k4_mma.h"
#include "conv3d_k4_planes.h"
#include "epilogue.h"
#include "fused_layer.h"
#include "k4_sample_terms.h"
#include "moments.h"
#include "plan.h"
#include "tensorcore_weights.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <deque>
#include <limits>
#include <mutex>

namespace fused3d {
namespace {

// Packed weights are cached per model: repacking costs a handful of small launches (~20 us), as
// much as the whole B=1 forward. An entry holds a reference to the weight and bias it was made
// from, so their storage cannot be reused by another tensor while cached, and their version
// counters catch in-place changes.
// The kernels of one family read the same packed weights.
enum class Packing { kK4, kIgemm, kIgemmBox, kDepthwise, kGeneral };

Packing packing_for(KernelKind kernel) {
  switch (kernel) {
    case KernelKind::kK4Mma:
    case KernelKind::kK4Planes: return Packing::kK4;
    case KernelKind::kIgemm: return Packing::kIgemm;
    case KernelKind::kIgemmBox: return Packing::kIgemmBox;
    case KernelKind::kDepthwise: return Packing::kDepthwise;
    case KernelKind::kGeneral: break;
  }
  return Packing::kGeneral;
}

struct PackedEntry {
  at::Tensor weight, bias;
  int64_t weight_version, bias_version;
  int64_t conv_groups;
  Precision precision;
  Packing packing;
  k4::TensorcoreWeights tc;         // the kernel-4x4x4 tensor-core kernels
  igemm::IgemmWeights igemm;        // the implicit-GEMM kernels (K in each one's column order)
  depthwise::DepthwiseWeights depthwise;  // the depthwise kernel
  general::GeneralWeights general;  // the general kernel
};

bool same_source(const PackedEntry& e, const FusedLayer& l, Precision precision, Packing packing) {
  const bool same_bias = e.bias.defined() ? (l.bias.defined() && e.bias.is_same(l.bias) &&
                                             e.bias_version == l.bias._version())
                                          : !l.bias.defined();
  return e.packing == packing && e.precision == precision && e.conv_groups == l.conv_groups &&
         e.weight.is_same(l.weight) && e.weight_version == l.weight._version() && same_bias;
}

PackedEntry packed_weights(const FusedLayer& l, Precision precision, Packing packing) {
  constexpr size_t kCacheEntries = 8;
  static std::mutex mutex;
  static std::deque<PackedEntry> cache;  // most recent first
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (const PackedEntry& e : cache)
      if (same_source(e, l, precision, packing)) return e;
  }
  PackedEntry e{l.weight, l.bias, l.weight._version(), l.bias.defined() ? l.bias._version() : 0,
                l.conv_groups, precision, packing, {}, {}, {}, {}};
  switch (packing) {
    case Packing::kK4: e.tc = k4::pack_tensorcore_weights(l, precision); break;
    case Packing::kIgemm: e.igemm = igemm::pack_weights(l, precision); break;
    case Packing::kIgemmBox: e.igemm = igemm_box::pack_weights(l, precision); break;
    case Packing::kDepthwise: e.depthwise = depthwise::pack_weights(l); break;
    case Packing::kGeneral: e.general = general::pack_weights(l); break;
  }
  std::lock_guard<std::mutex> lock(mutex);
  cache.push_front(e);
  if (cache.size() > kCacheEntries) cache.pop_back();
  return e;
}

}  // namespace

void fused_forward_cuda_out(const at::Tensor& input, const FusedLayer& layer, Precision precision, at::Tensor& out) {
  TORCH_CHECK(input.is_cuda(), "fused3d: the CUDA pipeline needs a CUDA input, got one on ", input.device());
  const std::string why = forward_reason(input, layer, input.device());
  TORCH_CHECK(why.empty(), "fused3d: ", why);
  const c10::cuda::CUDAGuard guard(input.device());

  const at::Tensor x = input.contiguous();
  const std::string out_why = out_mismatch_reason(out, x, layer);
  TORCH_CHECK(out_why.empty(), "fused3d: ", out_why);
  TORCH_CHECK(x.numel() == 0 || x.stride(0) < std::numeric_limits<int>::max(),
              "fused3d: one sample of shape ", shape_string(x.sizes().slice(1)),
              " has 2^31 elements or more; per-sample offsets are 32-bit");
  const int64_t batch = x.size(0), cout = layer.out_channels();
  if (batch == 0) return;

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const Plan plan = make_plan(layer, x, precision);
  const PackedEntry packed = packed_weights(layer, precision, packing_for(plan.kernel));
  static_assert(sizeof(Moments<float>) == 3 * sizeof(float), "partials are viewed as floats");
  const at::TensorOptions float_options = x.options().dtype(at::kFloat);

  // The epilogue computes in double and writes float32; a float16 / bfloat16 result is rounded
  // from that once (a (B, Cout) copy).
  const at::Tensor gamma = as_float32(layer.gamma), beta = as_float32(layer.beta);
  at::Tensor out32 = out.scalar_type() == at::kFloat ? out : at::empty({batch, cout}, float_options);
  at::Tensor partials = at::empty({batch, plan.tiles, cout, 3}, float_options);
  EpilogueParams p{};
  p.partials = reinterpret_cast<const Moments<float>*>(partials.data_ptr<float>());
  p.gamma = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  p.beta = beta.defined() ? beta.data_ptr<float>() : nullptr;
  p.out = out32.data_ptr<float>();
  p.batch = batch;
  p.tiles = plan.tiles;
  p.channels = static_cast<int>(cout);
  p.groups = static_cast<int>(layer.norm_groups);
  p.eps = layer.eps;

  if (plan.kernel == KernelKind::kGeneral) {
    general::launch(x, layer, packed.general, partials, stream);
  } else if (plan.kernel == KernelKind::kDepthwise) {
    depthwise::launch(x, layer, packed.depthwise, partials, stream);
  } else if (plan.kernel == KernelKind::kIgemm) {
    igemm::launch(x, layer, packed.igemm, plan.tiles, partials, stream);
  } else if (plan.kernel == KernelKind::kIgemmBox) {
    igemm_box::launch(x, layer, packed.igemm, plan.tiles, partials, stream);
  } else {
    const k4::SampleTerms terms = k4::sample_terms(x, packed.tc, stream);
    if (plan.kernel == KernelKind::kK4Mma)
      k4_mma::launch(x, packed.tc, terms, plan, partials, plan.epilogue_in_kernel ? &p : nullptr, stream);
    else
      k4_planes::launch(x, packed.tc, terms, plan, partials, stream);
  }
  if (!plan.epilogue_in_kernel) epilogue::launch(p, stream);
  if (!out32.is_same(out)) out.copy_(out32);
}

at::Tensor fused_forward_cuda(const at::Tensor& input, const FusedLayer& layer, Precision precision) {
  at::Tensor out = at::empty({input.dim() > 0 ? input.size(0) : 0, layer.out_channels()}, input.options());
  fused_forward_cuda_out(input, layer, precision, out);
  return out;
}

}  // namespace fused3d
