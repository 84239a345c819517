// The fused algorithm on the CPU against libtorch native and float64: statistics merge, eps,
// affine, bias, odd shapes. Runs everywhere, CI included.
#include "fused3d/pipeline.h"
#include "fused3d/tensor_io.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>

namespace fused3d::test {
namespace {

const at::Device kCpu(at::kCPU);

// The tail's two forms give the same bits on runs of every length class (shorter than the 16 lanes,
// whole lanes, past a 1024-value block) and on values that test the clamps: NaN, infinities, -0,
// values around -3 and 3 (where the gate reaches 0 and 1), tiny ones; and the moments match
// float64's. Skipped where the CPU has no AVX2 (the portable form is all there is).
TEST(FusedCpu, TailFormsGiveTheSameBits) {
  if (!cpu_has_avx2()) GTEST_SKIP() << "no AVX2 on this CPU: the portable form is the only one";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(71);
  for (const int64_t count : {1, 7, 16, 17, 84, 350, 1023, 1024, 1025, 10933}) {
    for (int kind = 0; kind < 4; ++kind) {
      SCOPED_TRACE("count " + std::to_string(count) + " kind " + std::to_string(kind));
      at::Tensor v = kind == 0   ? at::randn({count}, gen) * 4.0
                     : kind == 1 ? at::rand({count}, gen) * 1e-4 + 5.0
                     : kind == 2 ? at::randn({count}, gen) * 1e-30
                                 : (at::randint(-3, 4, {count}, gen).to(at::kFloat) + at::randn({count}, gen) * 1e-6);
      if (kind == 3 && count > 10) {
        auto a = v.accessor<float, 1>();
        a[3] = NAN, a[5] = -INFINITY, a[7] = INFINITY, a[8] = -0.0f;
      }
      const Moments<float> p = hardswish_moments_portable(v.data_ptr<float>(), count);
      const Moments<float> x = hardswish_moments_avx2(v.data_ptr<float>(), count);
      ASSERT_EQ(std::memcmp(&p, &x, sizeof p), 0) << p.mean << " " << p.m2 << " against " << x.mean << " " << x.m2;
      if (kind == 3 && count > 10) continue;  // NaN
      const at::Tensor h = at::hardswish(v.to(at::kDouble));
      const double mean = h.mean().item<double>(), m2 = (h - mean).pow(2).sum().item<double>();
      EXPECT_EQ(p.count, static_cast<float>(count));
      // float32 sums of pivot-shifted values in blocks of 1024: a few float roundings of the spread.
      EXPECT_NEAR(p.mean, mean, 1e-6 * (std::abs(mean) + h.std(/*unbiased=*/false).item<double>()) + 1e-37);
      EXPECT_NEAR(p.m2, m2, 1e-5 * m2 + 1e-37);
    }
  }
}

TEST(FusedCpu, MatchesNativeAndFloat64OverShapeMatrix) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  for (const LayerSpec& spec : shape_matrix()) {
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    expect_matches_references(layer, random_input(spec, gen), kCpu, kFloat32Bound);
  }
}

// Inputs far from zero make |mean| >> std inside each group: sum-of-squares variance would cancel.
TEST(FusedCpu, OffsetInputsKeepTheirAccuracy) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const LayerSpec spec{2, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  expect_matches_references(layer, random_input(spec, gen) + 5.0, kCpu, kFloat32Bound);
  expect_matches_references(layer, at::randn({2, 3, 16, 32, 32}, gen), kCpu, kFloat32Bound);
}

TEST(FusedCpu, LargeEpsChangesTheResultAsNativeDoes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const LayerSpec spec{2, 3, 8, 2, {3, 3, 3}, {6, 8, 8}, true, true};
  FusedLayer layer = random_layer(spec, gen);
  layer.eps = 0.5;
  expect_matches_references(layer, random_input(spec, gen), kCpu, kFloat32Bound);
}

TEST(FusedCpu, SameBitsWhateverTheThreadCount) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const LayerSpec spec{4, 3, 16, 4, {4, 4, 4}, {8, 12, 12}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor x = random_input(spec, gen);
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = fused_forward(x, layer);
  at::set_num_threads(std::max(2, saved));
  const at::Tensor many = fused_forward(x, layer);
  at::set_num_threads(saved);
  EXPECT_TRUE(at::equal(one, many));
}

TEST(FusedCpu, EmptyBatchGivesEmptyResult) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(10);
  const LayerSpec spec{0, 3, 16, 4, {4, 4, 4}, {8, 8, 8}, true, true};
  const at::Tensor out = fused_forward(random_input(spec, gen), random_layer(spec, gen));
  EXPECT_EQ(out.sizes(), at::IntArrayRef({0, 16}));
}

TEST(FusedCpu, Float16AndBFloat16ComputeInFloat32) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(19);
  const std::vector<LayerSpec> matrix = shape_matrix();
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16})
    for (const LayerSpec& spec : {matrix[1], matrix.back()}) {
      SCOPED_TRACE(dtype_name(dtype) + " " + to_string(spec));
      expect_reduced_precision_matches_float64(spec, dtype, kCpu, gen);
    }
}

TEST(FusedCpu, NanAndInfPropagateAsInPyTorch) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20);
  expect_special_values_propagate_as_native({4, 3, 8, 2, {3, 3, 3}, {6, 7, 8}, true, true}, kCpu,
                                            Precision::kAccurate, kFloat32Bound, gen);
}

TEST(FusedCpu, ConstantChannelGroupGivesBeta) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  expect_constant_group_gives_beta({2, 3, 12, 3, {3, 3, 3}, {6, 7, 8}, true, true}, kCpu, Precision::kAccurate,
                                   kFloat32Bound, gen);
}

TEST(FusedCpu, MatchesPyTorchOutputSavedByTheExporter) {
  for (const char* name : {"standard", "odd", "settings"}) {
    SCOPED_TRACE(name);
    const FusedLayer layer = load_model(fixture(std::string(name) + "_scripted.pt")).layer;
    const at::Tensor out = fused_forward(load_tensor(fixture(std::string(name) + "_x.pt")), layer);
    EXPECT_LE(relative_l2(out, load_tensor(fixture(std::string(name) + "_ref.pt"))), kFloat32Bound);
  }
}

}  // namespace
}  // namespace fused3d::test
