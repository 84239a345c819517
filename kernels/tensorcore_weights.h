// The weights of a kernel-4x4x4, 16-channel layer in the layouts of the two tensor-core kernels
// (tensorcore_weights.cu packs them once per model; the entry caches them).
#pragma once

#include "fused_layer.h"

#include <array>

namespace fused3d::k4 {

// One part (tf32 mode) or hi + lo (accurate mode), in fp16 scaled per output channel by a power of
// two for the fast paths, and in TF32 for the fallback route.
struct TensorcoreWeights {
  at::Tensor half_fragments;  // (Cin, 4 kh, parts, 32 lanes, 8) float16: the mma.sync kernel's m16n8k16 A fragments
  at::Tensor wgmma_tiles;     // (Cin, parts, 1024) float16: the planes kernel's wgmma B tiles (K 16 x N 64)
  at::Tensor tf32_fragments;  // (Cin, 4 kd, 2 kh pairs, parts, 32 lanes, 4) float32, TF32-rounded: m16n8k8 A
  at::Tensor half_unscale;    // (16) 1 / channel scale
  std::array<float, 16> half_unscale_host{};  // the same, on the host
  at::Tensor bias;            // (16), zeros when the conv has no bias
  at::Tensor weight_sums;     // (16, Cin) float32: sum over the 64 taps, in double, of each (output, input) channel's weights
  int parts = 1;
};

TensorcoreWeights pack_tensorcore_weights(const FusedLayer& layer, Precision precision);

// TF32 rounding as cvt.rna does it (nearest, ties away from zero) on float32 bit patterns.
at::Tensor round_to_tf32(const at::Tensor& w);

}  // namespace fused3d::k4
