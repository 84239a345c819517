// The tensor-core fast path for kernel 4x4x4, Cout 16 (conv3d_k4_tensorcore.cu).
#pragma once

#include "fused_layer.h"
#include "moments.h"

#include <cuda_runtime.h>

namespace fused3d {

// Weights as per-lane mma fragments: one part (tf32 mode) or hi + lo (accurate mode), in fp16
// (scaled per output channel by a power of two) for the fast path and in TF32 for the fallback.
struct TensorcoreWeights {
  at::Tensor half_fragments;  // (Cin, 4 kh, parts, 32 lanes, 8) float16: m16n8k16 A fragments
  at::Tensor half_bias;       // (16) bias * channel scale
  at::Tensor half_unscale;    // (16) 1 / channel scale
  at::Tensor tf32_fragments;  // (Cin, 4 kd, 2 kh pairs, parts, 32 lanes, 4) float32, TF32-rounded
  at::Tensor wgmma_tiles;     // (Cin, parts, 1024) float16: the planes kernel's wgmma B tiles
  at::Tensor bias;            // (16), zeros when the conv has no bias
  int parts = 1;
};

bool tensorcore_k4_can_run(const FusedLayer& layer, const at::Tensor& x, Precision precision);
TensorcoreWeights pack_tensorcore_k4_weights(const FusedLayer& layer, Precision precision);
// Whether the wgmma planes kernel (sm_90a) runs for x.
bool tensorcore_k4_runs_planes_kernel(const at::Tensor& x);
// Tiles per sample, each writing one Moments per channel.
int tensorcore_k4_tiles(const at::Tensor& x);
// Whether the moments kernel also runs the GroupNorm-mean epilogue (its last block) at this batch.
bool tensorcore_k4_runs_epilogue(int64_t batch);
// partials: (B, tiles, 16) Moments<float> viewed as (B, tiles, 16, 3) floats. epilogue: the
// epilogue's parameters when tensorcore_k4_runs_epilogue(B), else nullptr.
void launch_tensorcore_k4_moments(const at::Tensor& x, const TensorcoreWeights& packed, at::Tensor& partials,
                                  int tiles, const EpilogueParams* epilogue, cudaStream_t stream);

}  // namespace fused3d
