// The per-sample terms of the two tensor-core kernels (k4_sample_terms.cu): a pivot per (sample,
// input channel), taken off x before x is rounded to fp16 or TF32, and the bias per (sample, output
// channel) that adds the pivots' exact contribution back.
//
// Rounding x is unbiased noise that averages out over a channel's spatial mean only while x's
// spread is large against the rounding's spacing at x's level; on an offset (x = 0.5 + 1e-4 U[0,1),
// as calibrated sensor or normalized volume data can be) the rounding is systematic and the
// accurate mode gave 1.65e-5 against float64 (H200), over its 1e-5 bound. With the pivot
// p[n, c] = x[n, c, 0, 0, 0] the kernels round x - p instead, whose level is its spread, and
//   conv(x)[n, o, pos] = conv(x - p)[n, o, pos] + sum_c p[n, c] * sum_k w[o, c, k]
// holds at every output position, the kernels having no padding: the second term is a per-sample
// bias, computed here in double from the unrounded float32 weights. A non-finite x[n, c, 0, 0, 0]
// gives the pivot 0, so NaN and Inf reach the output as they would without it.
#pragma once

#include "tensorcore_weights.h"

#include <cuda_runtime.h>

namespace fused3d::k4 {

// Views into one (B, Cin + 32) float32 workspace.
struct SampleTerms {
  at::Tensor storage;
  const float* pivots;     // (B, Cin)
  const float* half_bias;  // (B, 16): the bias the fp16 accumulators start from (scaled per channel)
  const float* bias;       // (B, 16): the TF32 route's
};

// Launched on `stream` before the moments kernel; x contiguous float32 (B, Cin, D, H, W).
SampleTerms sample_terms(const at::Tensor& x, const TensorcoreWeights& weights, cudaStream_t stream);

}  // namespace fused3d::k4
