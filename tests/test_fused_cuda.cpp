// The CUDA pipeline against libtorch native (cuDNN, TF32 off) and float64. Skipped, visibly,
// where there is no GPU.
#include "fused3d/pipeline.h"
#include "fused3d/tensor_io.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>

namespace fused3d::test {
namespace {

class FusedCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: GPU test skipped";
  }
  const at::Device cuda_{"cuda:0"};
};

TEST_F(FusedCuda, MatchesNativeAndFloat64OverShapeMatrix) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4321);
  for (const LayerSpec& spec : shape_matrix()) {
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    expect_matches_references(layer, random_input(spec, gen), cuda_, kFloat32Bound);
  }
}

// The standard layer (tensor-core path, accurate mode) at a batch that fills the GPU, three input
// distributions (DESIGN-NOTES: U[0,1), N(0,1), U[5,6)).
TEST_F(FusedCuda, StandardLayerOnThreeInputDistributions) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const LayerSpec spec{64, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor uniform = random_input(spec, gen);
  expect_matches_references(layer, uniform, cuda_, kFloat32Bound);
  expect_matches_references(layer, at::randn(uniform.sizes(), gen), cuda_, kFloat32Bound);
  expect_matches_references(layer, random_input(spec, gen) + 5.0, cuda_, kFloat32Bound);
}

// Spatial sizes where the tensor-core path's last row and column tiles overlap their neighbours
// by different amounts (1, 3, 9 rows; 0, 11 columns: more than 8 masks both of a lane's columns).
TEST_F(FusedCuda, TensorcorePathTileOverlapsInBothModes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(15);
  const LayerSpec specs[] = {{3, 2, 16, 4, {4, 4, 4}, {5, 14, 19}, true, true},
                             {2, 5, 16, 2, {4, 4, 4}, {6, 30, 40}, false, true},
                             {2, 1, 16, 2, {4, 4, 4}, {4, 32, 32}, true, false}};
  for (const LayerSpec& spec : specs) {
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    const at::Tensor x = random_input(spec, gen);
    ASSERT_NE(fused_kernel_name(x.to(cuda_), layer_to(layer, cuda_, at::kFloat), Precision::kAccurate).find("tensor-core"),
              std::string::npos);
    expect_matches_references(layer, x, cuda_, kFloat32Bound, Precision::kAccurate);
    expect_matches_references(layer, x, cuda_, kTF32Bound, Precision::kTF32);
  }
}

// The fast path holds x in fp16; blocks whose inputs leave fp16's range (above 65504, or all below
// 2^-10) recompute with TF32 operands. Samples of different scales in one batch take different
// routes; all must keep the mode's accuracy.
TEST_F(FusedCuda, InputsOutsideHalfRangeKeepTheirAccuracy) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(17);
  const LayerSpec spec{4, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor scales = at::tensor({1e5f, 1e-6f, 1.0f, 3e4f}).view({4, 1, 1, 1, 1});
  const at::Tensor x = random_input(spec, gen) * scales;
  expect_matches_references(layer, x, cuda_, kFloat32Bound, Precision::kAccurate);
  expect_matches_references(layer, x, cuda_, kTF32Bound, Precision::kTF32);
}

TEST_F(FusedCuda, TF32ModeOnUniformAndNormalInputs) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(16);
  const LayerSpec spec{64, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor uniform = random_input(spec, gen);
  expect_matches_references(layer, uniform, cuda_, kTF32Bound, Precision::kTF32);
  expect_matches_references(layer, at::randn(uniform.sizes(), gen), cuda_, kTF32Bound, Precision::kTF32);
}

TEST_F(FusedCuda, MatchesPyTorchOutputSavedByTheExporter) {
  for (const char* name : {"standard", "odd"}) {
    SCOPED_TRACE(name);
    const FusedLayer layer = layer_to(load_model(fixture(std::string(name) + "_scripted.pt")).layer, cuda_, at::kFloat);
    const at::Tensor out = fused_forward(load_tensor(fixture(std::string(name) + "_x.pt")).to(cuda_), layer);
    EXPECT_LE(relative_l2(out, load_tensor(fixture(std::string(name) + "_ref.pt"))), kFloat32Bound);
  }
}

TEST_F(FusedCuda, BitwiseIdenticalAcrossRuns) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(12);
  const LayerSpec spec{16, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = layer_to(random_layer(spec, gen), cuda_, at::kFloat);
  const at::Tensor x = random_input(spec, gen).to(cuda_);
  const at::Tensor first = fused_forward(x, layer);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(at::equal(fused_forward(x, layer), first)) << "run " << i;
}

TEST_F(FusedCuda, NonContiguousInputGivesTheSameBits) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(13);
  const LayerSpec spec{3, 3, 16, 4, {4, 4, 4}, {9, 10, 11}, true, true};
  const FusedLayer layer = layer_to(random_layer(spec, gen), cuda_, at::kFloat);
  const at::Tensor wide = at::rand({3, 3, 9, 10, 15}, gen).to(cuda_);
  const at::Tensor strided = wide.slice(4, 2, 13);
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_TRUE(at::equal(fused_forward(strided, layer), fused_forward(strided.contiguous(), layer)));
}

TEST_F(FusedCuda, EmptyBatchGivesEmptyResult) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(14);
  const LayerSpec spec{0, 3, 16, 4, {4, 4, 4}, {8, 8, 8}, true, true};
  const FusedLayer layer = layer_to(random_layer(spec, gen), cuda_, at::kFloat);
  EXPECT_EQ(fused_forward(random_input(spec, gen).to(cuda_), layer).sizes(), at::IntArrayRef({0, 16}));
}

}  // namespace
}  // namespace fused3d::test
