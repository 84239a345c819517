// The two ways to compute the model: the fused pipeline (CUDA kernels, or the same algorithm in
// plain C++ on the CPU) and libtorch's native ops, the reference it is checked against.
#pragma once

#include "fused_layer.h"
#include "moments.h"
#include "plan.h"

#include <ATen/ATen.h>

#include <string>

namespace fused3d {

// Fused conv -> hardswish -> moments -> GroupNorm-mean epilogue on x's device. The _out form writes
// every element of a (B, Cout) tensor of x's dtype the caller owns (tests poison it first).
// Precision picks the tensor-core rounding on CUDA (fused_layer.h); the CPU computes float32 always.
at::Tensor fused_forward(const at::Tensor& x, const FusedLayer& layer, Precision precision = Precision::kAccurate);
void fused_forward_out(const at::Tensor& x, const FusedLayer& layer, Precision precision, at::Tensor& out);
// The plan fused_forward follows for a CUDA input (plan.h: which kernel, tiles, epilogue).
Plan fused_plan(const at::Tensor& x, const FusedLayer& layer, Precision precision);
// Which implementation fused_forward runs for this input, in words (plan.h's describe on CUDA).
std::string fused_kernel_name(const at::Tensor& x, const FusedLayer& layer, Precision precision);

// The CPU implementation of the fused algorithm (float32 arithmetic, the same moments merge).
void fused_forward_cpu_out(const at::Tensor& x, const FusedLayer& layer, at::Tensor& out);
// The tail's moments of hardswish over one run of values (a (sample, channel) of the conv output),
// in the portable form and, on x86-64 CPUs with AVX2 (cpu_has_avx2), the AVX2 form the tail then
// runs: the same operations in the same order, so the same bits (tested).
Moments<float> hardswish_moments_portable(const float* v, int64_t count);
Moments<float> hardswish_moments_avx2(const float* v, int64_t count);
bool cpu_has_avx2();
// Its tail alone: the (count, mean, M2) of hardswish(y) for every (sample, channel) of a
// contiguous float32 conv output y (n, Cout, OD, OH, OW), as (n, Cout, 3) floats. What the CPU
// benchmark times against libtorch's hardswish -> group_norm -> mean on the same y.
at::Tensor fused_tail_moments_cpu(const at::Tensor& y);

// conv3d -> hardswish -> group_norm -> mean through libtorch, with TF32 off so that float32 means
// float32; with float64 tensors this is the float64 reference.
at::Tensor native_forward(const at::Tensor& x, const FusedLayer& layer);

}  // namespace fused3d
