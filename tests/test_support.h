// Helpers shared by the tests: fixture paths, error measures, layers drawn at random, the GPU skip.
#pragma once

#include "fused3d/model.h"
#include "fused3d/pipeline.h"
#include "layer_specs.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

namespace fused3d::test {

inline std::string fixture(const std::string& name) { return std::string(FUSED3D_FIXTURE_DIR) + "/" + name; }

// ||a - b|| / ||b|| in float64; NaN anywhere gives NaN, which fails every `<=`.
inline double relative_l2(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kDouble).cpu(), bd = b.to(at::kDouble).cpu();
  return (ad - bd).norm().item<double>() / bd.norm().item<double>();
}

// Accuracy bound of the float32 pipelines against float64 (relative L2 of the (B, C) output). The
// conv sums Cin*k^3 products in float32 (relative error ~ sqrt(K) * 2^-24 per value, 1e-6 for
// K = 192 at worst); the spatial mean averages rounding away and the normalization divides by a
// std that is itself computed to ~1e-7. Measured: ~1e-7 (OPTIMIZATION.md 3.1: cuDNN 7e-8 to 1e-7). 1e-5
// is the accurate mode's promise, with a margin of two orders over what float32 gives.
constexpr double kFloat32Bound = 1e-5;
// The tf32 mode rounds x and the weights to TF32 (10-bit mantissa, 2^-11 relative). The weight
// rounding is systematic and does not average out over the spatial mean: OPTIMIZATION.md 3.1 has
// 2.6e-4 (U[0,1)) and 2.3e-5 (N(0,1)) relative L2 in emulation. 1e-3 is the mode's promise.
constexpr double kTF32Bound = 1e-3;

// A float16 / bfloat16 pipeline computes in float32 and rounds each output value once, to within
// half an ulp of it: 2^-11 (float16) or 2^-8 (bfloat16) relative per value, so of the L2 norm too.
// Added to the float32 bound.
inline double output_rounding(at::ScalarType dtype) {
  return dtype == at::kHalf ? std::ldexp(1.0, -11) : dtype == at::kBFloat16 ? std::ldexp(1.0, -8) : 0.0;
}

// The fused pipeline on `device`, written into a NaN-poisoned output, against libtorch native
// (float32, same device) and float64 (CPU). Returns the fused output.
inline at::Tensor expect_matches_references(const FusedLayer& layer_cpu, const at::Tensor& x_cpu,
                                            at::Device device, double bound,
                                            Precision precision = Precision::kAccurate) {
  const FusedLayer layer = layer_to(layer_cpu, device, at::kFloat);
  const at::Tensor x = x_cpu.to(device, at::kFloat);
  at::Tensor out = at::full({x.size(0), layer.out_channels()}, NAN, x.options());
  fused_forward_out(x, layer, precision, out);
  EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << "unwritten (NaN-poisoned) or non-finite output";
  const at::Tensor native = native_forward(x, layer);
  const at::Tensor f64 = native_forward(x_cpu.to(at::kDouble), layer_to(layer_cpu, at::kCPU, at::kDouble));
  EXPECT_LE(relative_l2(out, f64), bound) << "fused vs float64";
  EXPECT_LE(relative_l2(out, native), bound) << "fused vs libtorch native";
  EXPECT_LE(relative_l2(native, f64), kFloat32Bound) << "native vs float64 (the reference itself)";
  return out;
}

// float16 / bfloat16 layer and input: the fused output has that dtype and is within the float32
// bound plus one output rounding of float64 computed on the same (rounded) values. libtorch's own
// pipeline in that dtype runs too and must give the same dtype; its error, which includes the
// rounding of every intermediate tensor, is printed for comparison.
inline void expect_reduced_precision_matches_float64(const LayerSpec& spec, at::ScalarType dtype, at::Device device,
                                                     at::Generator& gen) {
  const FusedLayer layer_cpu = layer_to(random_layer(spec, gen), at::kCPU, dtype);
  const at::Tensor x_cpu = random_input(spec, gen).to(dtype);
  const FusedLayer layer = layer_to(layer_cpu, device, dtype);
  const at::Tensor x = x_cpu.to(device);
  at::Tensor out = at::full({spec.batch, spec.cout}, NAN, x.options());
  fused_forward_out(x, layer, Precision::kAccurate, out);
  EXPECT_EQ(out.scalar_type(), dtype);
  EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << "unwritten (NaN-poisoned) or non-finite output";
  const at::Tensor f64 = native_forward(x_cpu.to(at::kDouble), layer_to(layer_cpu, at::kCPU, at::kDouble));
  const double fused_error = relative_l2(out, f64);
  EXPECT_LE(fused_error, kFloat32Bound + output_rounding(dtype)) << dtype_name(dtype) << " vs float64";
  const at::Tensor native = native_forward(x, layer);
  EXPECT_EQ(native.scalar_type(), dtype);
  std::cout << "[ info     ] " << dtype_name(dtype) << " " << to_string(spec) << ": fused " << fused_error
            << ", libtorch in " << dtype_name(dtype) << " " << relative_l2(native, f64) << " (rel. L2 vs float64)\n";
}

// NaN, +Inf and -Inf in one input element of samples 1, 2, 3 (sample 0 clean): the output has NaN
// exactly where libtorch's has (a non-finite conv value reaches every channel of its sample through
// the group statistics), and the clean sample keeps its accuracy.
inline void expect_special_values_propagate_as_native(const LayerSpec& spec, at::Device device, Precision precision,
                                                      double bound, at::Generator& gen) {
  const FusedLayer layer = layer_to(random_layer(spec, gen), device, at::kFloat);
  at::Tensor x = random_input(spec, gen);
  ASSERT_GE(x.size(0), 4);
  x.index_put_({1, 0, 1, 2, 3}, NAN);
  x.index_put_({2, x.size(1) - 1, 0, 0, 0}, INFINITY);
  x.index_put_({3, 0, x.size(2) - 1, x.size(3) - 1, x.size(4) - 1}, -INFINITY);
  x = x.to(device);
  at::Tensor out = at::zeros({x.size(0), layer.out_channels()}, x.options());
  fused_forward_out(x, layer, precision, out);
  const at::Tensor native = native_forward(x, layer);
  EXPECT_TRUE(at::equal(at::isnan(out), at::isnan(native))) << "NaN pattern\nfused\n" << out << "\nnative\n" << native;
  EXPECT_TRUE(at::equal(at::isinf(out), at::isinf(native))) << "Inf pattern";
  EXPECT_TRUE(at::isnan(out.slice(0, 1)).any().item<bool>()) << "a non-finite input vanished";
  EXPECT_LE(relative_l2(out[0], native[0]), bound) << "the clean sample";
}

// A channel group whose conv weights are 0 and biases equal is constant: variance 0, so every
// normalized value is 0 and the output is beta (PyTorch: (x - mean) * rsqrt(0 + eps) * gamma + beta).
// The fused path gets exactly beta (the moments of equal values are exact); the float64 reference
// does too; libtorch's float32 within its rounding of x - mean (times rsqrt(eps)).
inline void expect_constant_group_gives_beta(const LayerSpec& spec, at::Device device, Precision precision,
                                             double bound, at::Generator& gen) {
  ASSERT_TRUE(spec.bias && spec.affine);
  FusedLayer layer = random_layer(spec, gen);
  const int64_t per_group = spec.cout / spec.groups;
  layer.weight.slice(0, 0, per_group).zero_();
  layer.bias.slice(0, 0, per_group).fill_(0.25);
  const at::Tensor out = expect_matches_references(layer, random_input(spec, gen), device, bound, precision);
  const at::Tensor beta = layer.beta.slice(0, 0, per_group).to(device).expand({spec.batch, per_group});
  EXPECT_TRUE(at::equal(out.slice(1, 0, per_group), beta)) << out.slice(1, 0, per_group) << "\nbeta\n" << beta;
}

}  // namespace fused3d::test
