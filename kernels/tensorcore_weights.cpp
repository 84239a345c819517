// Packing the weights of a kernel-4x4x4, 16-channel layer into the tensor-core kernels' layouts:
// the mma.sync kernel's A fragments, the planes kernel's wgmma B tiles, and the TF32 route's A
// fragments. Each layout is a view and a permute of the (16, Cin, 4, 4, 4) weight; the comments give
// the element order, which tests/test_layouts.cpp checks against the PTX fragment layouts.
#include "tensorcore_weights.h"

#include "k4_geometry.h"

namespace fused3d::k4 {

// TF32 rounding as cvt.rna does it (nearest, ties away from zero) on float32 bit patterns.
at::Tensor round_to_tf32(const at::Tensor& w) {
  return w.contiguous().view(at::kInt).add(0x1000).bitwise_and(static_cast<int32_t>(0xFFFFE000u)).view(at::kFloat);
}

TensorcoreWeights pack_tensorcore_weights(const FusedLayer& l, Precision precision) {
  const int64_t cin = l.in_channels();
  const at::Tensor w = l.weight.contiguous();
  const at::Tensor bias = l.bias.defined() ? l.bias.contiguous() : at::zeros({kCout}, w.options());
  TensorcoreWeights packed;
  packed.parts = precision == Precision::kAccurate ? 2 : 1;
  const auto split = [&](const at::Tensor& v, auto round) {
    const at::Tensor hi = round(v);
    if (packed.parts == 1) return hi.unsqueeze(0);
    return at::stack({hi, round(v - hi.to(at::kFloat))}, 0);  // (part, ...)
  };

  // fp16: each output channel scaled by 2^e so that max|w| is in [1, 2), exact in either direction.
  const at::Tensor max_abs = w.abs().amax({1, 2, 3, 4});
  const at::Tensor scale = at::where(max_abs > 0, at::exp2(-at::floor(at::log2(max_abs))), at::ones_like(max_abs));
  // A fragments of m16n8k16, k = 8*pp + 2*kw + kdl: register rho of lane 4g + t holds channel
  // g + 8*(rho % 2) at kd = 2*(rho / 2) + {0, 1}, kw = t. (co = 8*chh + g, ci, kd = 2*pp + kdl, kh, kw = t)
  // -> (ci, kh, lane = 4g + t, rho = (pp, chh), kdl)
  const at::Tensor scaled = (w * scale.view({kCout, 1, 1, 1, 1}))
                                .view({2, 8, cin, 2, 2, kKernel, kKernel})
                                .permute({2, 5, 1, 6, 3, 0, 4})
                                .reshape({cin, kKernel, 32, 8});
  const at::Tensor half_parts = split(scaled, [](const at::Tensor& v) { return v.to(at::kHalf); });
  packed.half_fragments = half_parts.permute({1, 2, 0, 3, 4}).contiguous();  // (ci, kh, part, lane, 8)
  // The planes kernel's B tiles, (ci, part): element (k, n = 16*kh + co) of a tile at
  // (2 * (n / 8) + k / 8) * 64 + (n % 8) * 8 + k % 8 halves (wgmma::b_offset), k = 8*pp + 2*kw + kdl.
  // (co = 8*chh + chl, ci, kd = 2*pp + kdl, kh, kw) -> (ci, kh, chh, pp, chl, kw, kdl)
  const at::Tensor tiles = (w * scale.view({kCout, 1, 1, 1, 1}))
                               .view({2, 8, cin, 2, 2, kKernel, kKernel})
                               .permute({2, 5, 0, 3, 1, 6, 4})
                               .reshape({cin, kPlanesTileHalves});
  packed.wgmma_tiles = split(tiles, [](const at::Tensor& v) { return v.to(at::kHalf); }).transpose(0, 1).contiguous();
  packed.half_unscale = scale.reciprocal().contiguous();
  const at::Tensor unscale_cpu = packed.half_unscale.cpu();
  for (int c = 0; c < kCout; ++c) packed.half_unscale_host[c] = unscale_cpu[c].item<float>();

  // TF32 fallback, m16n8k8 with k = kw + 4s for kh = 2q + s: register rho of lane 4g + t holds
  // channel g + 8*(rho % 2) at kh = 2q + rho / 2, kw = t.
  // (co = 8*chh + g, ci, kd, kh = 2q + s, kw = t) -> (ci, kd, q, lane, rho = (s, chh))
  const at::Tensor grouped = w.view({2, 8, cin, kKernel, 2, 2, kKernel})
                                 .permute({2, 3, 4, 1, 6, 5, 0})
                                 .reshape({cin, kKernel, 2, 32, 4});
  const at::Tensor tf32_parts = split(grouped, round_to_tf32);
  packed.tf32_fragments = tf32_parts.permute({1, 2, 3, 0, 4, 5}).contiguous();  // (ci, kd, q, part, lane, 4)
  packed.bias = bias;
  packed.weight_sums = w.to(at::kDouble).sum({2, 3, 4}).to(at::kFloat).contiguous();
  return packed;
}

}  // namespace fused3d::k4
