// The general kernel (conv3d_general.cu): conv3d -> bias -> hardswish -> per-(sample, channel)
// moments in float32 on CUDA cores, for every layer PyTorch's zero-padded Conv3d can be.
#pragma once

#include "fused_layer.h"

#include <cuda_runtime.h>

namespace fused3d::general {

// The weights in the kernel's layout (conv3d_general.cu), packed once per model.
struct GeneralWeights {
  at::Tensor weight;  // (G * tiles per group, taps, 16) float32, each group's channels padded to whole tiles
  at::Tensor bias;    // (G * tiles per group * 16) float32, zeros where the conv has no bias
};

GeneralWeights pack_weights(const FusedLayer& layer);
// Tiles per sample, each writing one Moments per channel.
int tiles(const at::Tensor& x, const FusedLayer& layer);
// partials: (B, tiles, Cout) Moments<float> viewed as (B, tiles, Cout, 3) floats; x contiguous.
void launch(const at::Tensor& x, const FusedLayer& layer, const GeneralWeights& weights, at::Tensor& partials,
            cudaStream_t stream);

}  // namespace fused3d::general
