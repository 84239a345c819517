// The fused algorithm on the CPU against libtorch native and float64: statistics merge, eps,
// affine, bias, odd shapes. Runs everywhere, CI included.
#include "fused3d/pipeline.h"
#include "fused3d/tensor_io.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

namespace fused3d::test {
namespace {

const at::Device kCpu(at::kCPU);

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
