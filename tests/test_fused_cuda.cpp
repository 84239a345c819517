// The CUDA pipeline against libtorch native (cuDNN, TF32 off) and float64. Skipped, visibly,
// where there is no GPU.
#include "conv3d_igemm_box.h"
#include "fused3d/pipeline.h"
#include "fused3d/tensor_io.h"
#include "tensorcore_weights.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <iostream>
#include <random>

namespace fused3d::test {
namespace {

// The depthwise kernel and the general one compute in float32 on CUDA cores, in either mode.
bool on_tensor_cores(const Plan& plan) {
  return plan.kernel != KernelKind::kGeneral && plan.kernel != KernelKind::kDepthwise;
}

bool is_depthwise(const LayerSpec& s) { return s.cin == s.conv_groups && s.cout / s.conv_groups <= 4; }

// FUSED3D_KERNEL (plan.h) set for a scope: the plan takes that kernel, or refuses the layer.
class RequestedKernel {
 public:
  explicit RequestedKernel(const char* id) { setenv("FUSED3D_KERNEL", id, 1); }
  ~RequestedKernel() { unsetenv("FUSED3D_KERNEL"); }
  RequestedKernel(const RequestedKernel&) = delete;
  RequestedKernel& operator=(const RequestedKernel&) = delete;
};

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
// distributions (OPTIMIZATION.md 3.1: U[0,1), N(0,1), U[5,6)).
TEST_F(FusedCuda, StandardLayerOnThreeInputDistributions) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const LayerSpec spec{64, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor uniform = random_input(spec, gen);
  expect_matches_references(layer, uniform, cuda_, kFloat32Bound);
  expect_matches_references(layer, at::randn(uniform.sizes(), gen), cuda_, kFloat32Bound);
  expect_matches_references(layer, random_input(spec, gen) + 5.0, cuda_, kFloat32Bound);
}

// Spatial sizes where the kernel-4x4x4 path's last row and column tiles overlap their neighbours
// by different amounts (1, 3, 9 rows; 0, 11 columns: more than 8 masks both of a lane's columns).
// The tf32 mode takes the kernel-4x4x4 path at these sizes; the accurate mode, below 8192 output
// positions per sample, the implicit-GEMM kernel (tensor cores too).
// A random layer and input of `spec`: the tensor-core path must take it (tf32 mode), and each mode
// asked for must match native and float64.
void expect_tensorcore_path_matches(const LayerSpec& spec, at::Generator& gen, at::Device cuda, bool accurate_too) {
  SCOPED_TRACE(to_string(spec));
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor x = random_input(spec, gen);
  ASSERT_TRUE(on_tensor_cores(fused_plan(x.to(cuda), layer_to(layer, cuda, at::kFloat), Precision::kTF32)));
  if (accurate_too) expect_matches_references(layer, x, cuda, kFloat32Bound, Precision::kAccurate);
  expect_matches_references(layer, x, cuda, kTF32Bound, Precision::kTF32);
}

TEST_F(FusedCuda, TensorcorePathTileOverlapsInBothModes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(15);
  const LayerSpec specs[] = {{3, 2, 16, 4, {4, 4, 4}, {5, 14, 19}, true, true},
                             {2, 5, 16, 2, {4, 4, 4}, {6, 30, 40}, false, true},
                             {2, 1, 16, 2, {4, 4, 4}, {4, 32, 32}, true, false},
                             // 13 x 27 x 37 positions: 3 rows and 11 columns of overlap, accurate mode too
                             {2, 2, 16, 2, {4, 4, 4}, {16, 30, 40}, true, true}};
  {
    const LayerSpec& big = specs[3];
    at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(18);
    const at::Tensor x = random_input(big, g2).to(cuda_);
    ASSERT_TRUE(on_tensor_cores(fused_plan(x, layer_to(random_layer(big, g2), cuda_, at::kFloat), Precision::kAccurate)));
  }
  for (const LayerSpec& spec : specs) expect_tensorcore_path_matches(spec, gen, cuda_, /*accurate_too=*/true);
}

// The launcher sets the kernels' shared-memory limit once per shape. The limit belongs to the
// kernel, so a later shape must not lower it under an earlier, larger one that runs again (the
// randomized sweep found that: "invalid argument" at launch). Both shapes need more than the
// default 48 KB (109 and 60 KB) and appear in no other test, so the launcher meets them here first.
TEST_F(FusedCuda, TensorcoreShapesRunInAnyOrder) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const LayerSpec larger{2, 2, 16, 4, {4, 4, 4}, {8, 60, 19}, true, true};
  const LayerSpec smaller{2, 2, 16, 4, {4, 4, 4}, {8, 20, 32}, true, true};
  for (const LayerSpec& spec : {larger, smaller, larger}) expect_tensorcore_path_matches(spec, gen, cuda_, false);
}

// At B = 1 the tensor-core kernel runs the epilogue itself (its last block), with a count of
// finished blocks per stream that every launch must leave at zero for the next: were it left
// nonzero, no block would run the next epilogue and the NaN-poisoned output would stay unwritten.
// Both modes against native and float64, then repeated runs on two streams, bitwise equal.
TEST_F(FusedCuda, SingleSampleRunsTheEpilogueInTheMomentsKernel) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  const LayerSpec spec{1, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor x = random_input(spec, gen);
  expect_matches_references(layer, x, cuda_, kFloat32Bound, Precision::kAccurate);
  expect_matches_references(layer, x, cuda_, kTF32Bound, Precision::kTF32);
  const FusedLayer on_gpu = layer_to(layer, cuda_, at::kFloat);
  const at::Tensor xc = x.to(cuda_);
  for (const Precision precision : {Precision::kAccurate, Precision::kTF32}) {
    const Plan plan = fused_plan(xc, on_gpu, precision);
    ASSERT_EQ(plan.kernel, KernelKind::kK4Mma);
    ASSERT_TRUE(plan.epilogue_in_kernel);
    const at::Tensor first = fused_forward(xc, on_gpu, precision);
    const auto expect_repeats = [&](const char* where) {
      for (int i = 0; i < 20; ++i) {
        at::Tensor out = at::full({1, spec.cout}, NAN, xc.options());
        fused_forward_out(xc, on_gpu, precision, out);
        ASSERT_TRUE(at::equal(out, first)) << where << ", run " << i;
      }
    };
    expect_repeats("default stream");
    const c10::cuda::CUDAStreamGuard other(c10::cuda::getStreamFromPool());
    expect_repeats("second stream");
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

// Inputs on an offset: x = L * (1 + s * U[0,1)) and L * (1 + s * N(0,1)) for levels L from 1e-3
// to 1e4 and spreads s down to 1e-6 of the level, in both modes on every tensor-core kernel (the
// standard layer at B = 64 the planes kernel, at B = 2 the mma.sync kernel; kernel 3 with padding
// the box implicit-GEMM kernel, and the implicit-GEMM kernel on request), against float64. Rounding x itself is systematic there (the accurate
// mode gave 1.65e-5 at L = 0.5, s = 2e-4, with x in fp16): the kernel-4x4x4 kernels round
// x - x[n, c, 0, 0, 0] and add the pivots' contribution back (k4_sample_terms.h); the implicit-GEMM
// kernels' accurate mode keeps 22 bits of x by its hi + lo split.
TEST_F(FusedCuda, OffsetAndScaledInputsKeepTheModesBounds) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(24);
  using T3 = std::array<int64_t, 3>;
  const struct {
    LayerSpec spec;
    KernelKind kernel;
  } cases[] = {{{64, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true}, KernelKind::kK4Planes},
               {{2, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true}, KernelKind::kK4Mma},
               {{4, 3, 16, 4, {3, 3, 3}, {16, 32, 32}, true, true, T3{1, 1, 1}, T3{1, 1, 1}}, KernelKind::kIgemmBox},
               {{4, 3, 16, 4, {3, 3, 3}, {16, 32, 32}, true, true, T3{1, 1, 1}, T3{1, 1, 1}}, KernelKind::kIgemm}};
  for (const auto& [spec, kernel] : cases) {
    std::optional<RequestedKernel> request;
    if (kernel == KernelKind::kIgemm) request.emplace("igemm");
    const int64_t batch = spec.batch;
    const FusedLayer layer_cpu = random_layer(spec, gen);
    const FusedLayer layer = layer_to(layer_cpu, cuda_, at::kFloat);
    const FusedLayer layer64 = layer_to(layer_cpu, cuda_, at::kDouble);
    for (const double level : {1e-3, 1e-1, 1.0, 1e2, 1e4})
      for (const double spread : {1.0, 1e-2, 1e-4, 1e-6})
        for (const bool normal : {false, true}) {
          const at::Tensor noise = normal ? at::randn({batch, 3, 16, 32, 32}, gen) : at::rand({batch, 3, 16, 32, 32}, gen);
          const at::Tensor x = (level * (1.0 + spread * noise)).to(at::kFloat).to(cuda_);
          const at::Tensor f64 = native_forward(x.to(at::kDouble), layer64);
          for (const auto& [precision, bound] :
               {std::pair{Precision::kAccurate, kFloat32Bound}, std::pair{Precision::kTF32, kTF32Bound}}) {
            SCOPED_TRACE(std::string(kernel_id(kernel)) + " B " + std::to_string(batch) + " level " + std::to_string(level) + " spread " +
                         std::to_string(spread) + (normal ? " normal" : " uniform") +
                         (precision == Precision::kTF32 ? " tf32" : " accurate"));
            ASSERT_EQ(fused_plan(x, layer, precision).kernel, kernel);
            at::Tensor out = at::full({batch, 16}, NAN, x.options());
            fused_forward_out(x, layer, precision, out);
            ASSERT_TRUE(at::isfinite(out).all().item<bool>()) << "unwritten (NaN-poisoned) or non-finite output";
            EXPECT_LE(relative_l2(out, f64), bound) << "fused vs float64";
          }
        }
  }
}

TEST_F(FusedCuda, TF32ModeOnUniformAndNormalInputs) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(16);
  const LayerSpec spec{64, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const at::Tensor uniform = random_input(spec, gen);
  expect_matches_references(layer, uniform, cuda_, kTF32Bound, Precision::kTF32);
  expect_matches_references(layer, at::randn(uniform.sizes(), gen), cuda_, kTF32Bound, Precision::kTF32);
}

// From 64 samples of 16 x 32 x 32 both modes run the wgmma planes kernel, where a block streams its
// share of the batch's output planes (on 132 SMs, 52 or 53 of 529 x 13: most samples are split
// between two blocks). A third of the samples U[0,1), a third N(0,1), a third U[5,6) (OPTIMIZATION.md 3.1:
// where rounding x costs the most), and four beyond fp16's range (1e5, 1e-6: the TF32 fallback; 3e4:
// still fp16). Every sample against libtorch native; a spread of them (each distribution, the scaled
// ones) against float64 on the CPU, which a sample's output allows (it depends on that sample alone;
// all 529 in float64 would take the CPU minutes).
TEST_F(FusedCuda, PlanesKernelOverManySamplesInBothModes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(31);
  const LayerSpec spec{529, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  at::Tensor x_cpu = random_input(spec, gen);
  x_cpu.slice(0, 176, 352).normal_(0.0, 1.0, gen);
  x_cpu.slice(0, 352).add_(5.0);
  const int64_t scaled[] = {5, 77, 300, 528};
  const float scales[] = {1e5f, 1e-6f, 3e4f, 1e5f};
  for (int i = 0; i < 4; ++i) x_cpu[scaled[i]].mul_(scales[i]);
  const FusedLayer on_gpu = layer_to(layer, cuda_, at::kFloat);
  const at::Tensor x = x_cpu.to(cuda_);
  const at::Tensor native = native_forward(x, on_gpu);
  const at::Tensor picked = at::tensor(std::vector<int64_t>{0, 1, 5, 77, 131, 132, 200, 263, 264, 300, 395, 396, 527, 528});
  const at::Tensor f64 = native_forward(x_cpu.index_select(0, picked).to(at::kDouble), layer_to(layer, at::kCPU, at::kDouble));
  for (const auto& [precision, bound] : {std::pair{Precision::kAccurate, kFloat32Bound}, std::pair{Precision::kTF32, kTF32Bound}}) {
    SCOPED_TRACE(precision == Precision::kTF32 ? "tf32" : "accurate");
    ASSERT_EQ(fused_plan(x, on_gpu, precision).kernel, KernelKind::kK4Planes);
    at::Tensor out = at::full({spec.batch, spec.cout}, NAN, x.options());
    fused_forward_out(x, on_gpu, precision, out);
    ASSERT_TRUE(at::isfinite(out).all().item<bool>()) << "unwritten (NaN-poisoned) or non-finite output";
    EXPECT_LE(relative_l2(out, native), bound) << "fused vs libtorch native";
    EXPECT_LE(relative_l2(out.index_select(0, picked.to(cuda_)), f64), bound) << "fused vs float64";
  }
}

TEST_F(FusedCuda, MatchesPyTorchOutputSavedByTheExporter) {
  for (const char* name : {"standard", "odd", "settings"}) {
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
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(at::equal(fused_forward(x, layer), first)) << "run " << i;
  // The implicit-GEMM kernel too, with every conv setting in play.
  const LayerSpec general = shape_matrix().back();
  const FusedLayer general_layer = layer_to(random_layer(general, gen), cuda_, at::kFloat);
  const at::Tensor general_x = random_input(general, gen).to(cuda_);
  const at::Tensor general_first = fused_forward(general_x, general_layer);
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(at::equal(fused_forward(general_x, general_layer), general_first)) << "implicit GEMM, run " << i;
}

// Layers beyond the shape matrix on both implicit-GEMM kernels (the box kernel, which the plan
// picks for float32 where W is a multiple of 4, and the gather kernel on request), in both modes
// against native and float64: many channels (K of 864 and 432: 54 and 27 pipeline slices), 130 channels (three blocks
// of 64, the last mostly padding), kernel 1, kernel 7 with padding 3, a kernel of 576 taps, one
// input channel and 8 output channels per conv group (the depthwise kernel takes up to 4), and a
// batch whose tiles split its positions unevenly.
TEST_F(FusedCuda, ImplicitGemmLayersInBothModes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(25);
  using T3 = std::array<int64_t, 3>;
  std::vector<LayerSpec> specs = {
      {2, 32, 64, 8, {3, 3, 3}, {8, 12, 12}, true, true},
      {2, 16, 130, 10, {3, 3, 3}, {6, 8, 8}, true, true},
      {2, 32, 64, 16, {1, 1, 1}, {6, 8, 12}, false, true},
      {2, 4, 16, 4, {7, 7, 7}, {9, 10, 12}, true, true, T3{1, 1, 1}, T3{3, 3, 3}},
      {2, 2, 12, 3, {9, 8, 8}, {11, 10, 12}, true, true},
      {2, 8, 64, 8, {3, 3, 3}, {8, 9, 12}, true, true, T3{1, 1, 1}, T3{1, 1, 1}, T3{1, 1, 1}, 8},
      {37, 3, 16, 4, {3, 3, 3}, {16, 32, 32}, true, true},
  };
  for (const LayerSpec& spec : shape_matrix())
    if (spec.kernel != std::array<int64_t, 3>{4, 4, 4} && !is_depthwise(spec)) specs.push_back(spec);
  int box_layers = 0;
  for (const LayerSpec& spec : specs) {
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    const at::Tensor x = random_input(spec, gen);
    // The box kernel's tensor copies need rows of whole 16-byte pieces (W a multiple of 4), two
    // chunks' footprints must fit its shared memory (the 576-tap layer's: 2 x 4 x 9 x 18 x 28 floats)
    // and a chunk's k8 steps its parameters (that layer's: 288).
    const igemm_box::Tiling tiling = igemm_box::tiling(x, layer);
    const bool box = spec.spatial[2] % 4 == 0 &&
                     igemm_box::shared_bytes(tiling) <= static_cast<size_t>(igemm_box::Traits::kMaxSharedBytes) &&
                     2 * igemm_box::slices_per_chunk(tiling) <= igemm_box::Traits::kMaxColumnSteps;
    box_layers += box;
    const KernelKind planned = box ? KernelKind::kIgemmBox : KernelKind::kIgemm;
    for (const bool requested : {false, true}) {
      const KernelKind kernel = requested ? KernelKind::kIgemm : planned;
      SCOPED_TRACE(std::string(kernel_id(kernel)) + (requested ? " on request" : ""));
      std::optional<RequestedKernel> request;
      if (requested) request.emplace("igemm");
      for (const Precision precision : {Precision::kAccurate, Precision::kTF32})
        ASSERT_EQ(fused_plan(x.to(cuda_), layer_to(layer, cuda_, at::kFloat), precision).kernel, kernel);
      expect_matches_references(layer, x, cuda_, kFloat32Bound, Precision::kAccurate);
      expect_matches_references(layer, x, cuda_, kTF32Bound, Precision::kTF32);
    }
  }
  EXPECT_GE(box_layers, 6) << "the box kernel takes most of these layers";
}

// FUSED3D_KERNEL names the kernel the plan takes where that kernel can take the layer, and is an
// error otherwise: the depthwise kernel for two input channels per group, the kernel-4x4x4
// kernels for kernel 3, a name no kernel has. The two implicit-GEMM kernels' results on one layer
// are not bitwise equal (their K orders differ) but both within the bound.
TEST_F(FusedCuda, KernelRequestedByName) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(27);
  const LayerSpec spec{2, 4, 16, 4, {3, 3, 3}, {6, 9, 12}, true, true};
  const FusedLayer layer = layer_to(random_layer(spec, gen), cuda_, at::kFloat);
  const at::Tensor x = random_input(spec, gen).to(cuda_);
  EXPECT_EQ(fused_plan(x, layer, Precision::kAccurate).kernel, KernelKind::kIgemmBox);
  for (const KernelKind kernel : {KernelKind::kIgemm, KernelKind::kIgemmBox, KernelKind::kGeneral}) {
    const RequestedKernel request(kernel_id(kernel));
    EXPECT_EQ(fused_plan(x, layer, Precision::kAccurate).kernel, kernel);
    EXPECT_EQ(fused_kernel_name(x, layer, Precision::kAccurate).rfind(kernel_id(kernel), 0), 0u);
  }
  for (const char* refused : {"depthwise", "k4-mma", "k4-planes", "igemm-boxes", ""}) {
    SCOPED_TRACE(refused);
    const RequestedKernel request(refused);
    if (*refused == '\0') {
      EXPECT_EQ(fused_plan(x, layer, Precision::kAccurate).kernel, KernelKind::kIgemmBox) << "empty: the plan's own choice";
      continue;
    }
    EXPECT_THROW(fused_forward(x, layer), c10::Error);
  }
  const RequestedKernel request("igemm-box");
  EXPECT_THROW(fused_plan(x.to(at::kHalf), layer_to(layer, cuda_, at::kHalf), Precision::kAccurate), c10::Error)
      << "float16 inputs are the gather kernel's";
  const at::Tensor narrow = x.slice(4, 0, 10).contiguous();
  EXPECT_THROW(fused_plan(narrow, layer, Precision::kAccurate), c10::Error) << "W = 10: rows of 40 bytes";
}

// Layers with one input channel per conv group on the depthwise kernel, against native and
// float64 in both modes, each held to float32's bound (the kernel computes in float32 either way):
// 1 to 4 output channels per group, tiles of 8 planes with a partial last one, of 4 (7 output
// planes; stride 2, whose 8-plane footprint is over the shared-memory budget) and single planes
// (2 output planes; stride 3 with kernel 7), stride, dilation,
// padding, non-cubic kernels, kernel 7, outputs narrower than a warp and wider than one tile, float16
// and bfloat16 inputs; and a layer whose footprint does not fit goes to the implicit-GEMM kernel.
TEST_F(FusedCuda, DepthwiseLayersInBothModes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(26);
  using T3 = std::array<int64_t, 3>;
  const std::vector<LayerSpec> specs = {
      {3, 32, 32, 8, {3, 3, 3}, {20, 12, 40}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 32},
      {2, 16, 32, 8, {3, 3, 3}, {10, 9, 70}, true, true, T3{1, 1, 1}, T3{1, 1, 1}, T3{1, 1, 1}, 16},
      {2, 4, 12, 4, {2, 3, 4}, {9, 10, 7}, false, true, T3{1, 2, 1}, T3{0, 1, 2}, T3{2, 1, 1}, 4},
      {2, 2, 8, 2, {3, 1, 5}, {5, 6, 20}, true, false, T3{2, 1, 3}, T3{0, 0, 0}, T3{1, 1, 2}, 2},
      {2, 6, 6, 3, {7, 7, 7}, {14, 16, 18}, true, true, T3{1, 1, 1}, T3{3, 3, 3}, T3{1, 1, 1}, 6},
      {2, 2, 2, 1, {7, 7, 7}, {28, 28, 100}, true, true, T3{3, 3, 3}, T3{0, 0, 0}, T3{1, 1, 1}, 2},
      {2, 4, 4, 2, {5, 5, 5}, {16, 40, 70}, true, true, T3{2, 2, 2}, T3{2, 2, 2}, T3{1, 1, 1}, 4},
      {5, 8, 8, 4, {1, 1, 1}, {3, 4, 5}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 8},
  };
  for (const LayerSpec& spec : specs) {
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    const at::Tensor x = random_input(spec, gen);
    for (const Precision precision : {Precision::kAccurate, Precision::kTF32}) {
      ASSERT_EQ(fused_plan(x.to(cuda_), layer_to(layer, cuda_, at::kFloat), precision).kernel, KernelKind::kDepthwise);
      expect_matches_references(layer, x, cuda_, kFloat32Bound, precision);
    }
    expect_matches_references(layer, at::randn(x.sizes(), gen) + 3.0, cuda_, kFloat32Bound, Precision::kTF32);
  }
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16})
    for (const LayerSpec& spec : {specs[0], specs[2]}) {
      SCOPED_TRACE(dtype_name(dtype) + " " + to_string(spec));
      expect_reduced_precision_matches_float64(spec, dtype, cuda_, gen);
    }
  const LayerSpec wide{1, 1, 1, 1, {1, 7, 7}, {2, 60, 60}, true, true, T3{1, 8, 8}, T3{0, 0, 0}, T3{1, 8, 8}, 1};
  const FusedLayer layer = random_layer(wide, gen);
  const at::Tensor x = random_input(wide, gen);
  ASSERT_EQ(fused_plan(x.to(cuda_), layer_to(layer, cuda_, at::kFloat), Precision::kAccurate).kernel, KernelKind::kIgemm);
  expect_matches_references(layer, x, cuda_, kFloat32Bound, Precision::kAccurate);
}

// At least 200 random layers and inputs a run, from a seed printed (and settable with
// FUSED3D_SWEEP_SEED) so any failure reproduces: channels, kernel sizes per axis, groups, eps,
// bias and affine drawn at random over what the fused kernels accept, a fifth of them in the
// kernel-4x4x4 kernels' shape (kernel 4, 16 channels), the others on the implicit-GEMM kernels (or
// the depthwise one, where a conv group has one input channel); the share per kernel is printed. Checked against float64 on the GPU:
//   ||out - ref|| <= bound * ||ref|| + 1e-6 * sqrt(numel)
// The absolute term covers layers whose exact output is 0 (one channel per group, no affine: the
// mean of a normalized channel), where float32 leaves ~1e-7 per element and a relative error means
// nothing. The tf32 mode on tensor cores may also be as far from float64 as twice what rounding x and
// the weights to TF32 alone moves the layer (ref_tf32: float64 on the rounded operands):
//   ||out - ref|| <= max(1e-3 * ||ref||, 2 * ||ref_tf32 - ref||) + 1e-6 * sqrt(numel)
// An output that is a small difference of channel means (no affine, two channels per group) turns
// the operands' 2^-11 rounding into more than 1e-3 of itself for any TF32 convolution; the kernels
// round to 11 significant bits as well (TF32, or float16 in the kernel-4 kernels) but not always the
// same values, hence the factor 2.
TEST_F(FusedCuda, RandomizedSweepAgainstFloat64) {
  const char* env = std::getenv("FUSED3D_SWEEP_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : static_cast<uint64_t>(std::random_device{}());
  std::cout << "[ sweep    ] seed " << seed << " (FUSED3D_SWEEP_SEED=" << seed << " to reproduce)" << std::endl;
  std::mt19937_64 rng(seed);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  constexpr int kConfigs = 200;
  int tensorcore = 0;
  std::map<std::string, int> per_kernel;
  for (int i = 0; i < kConfigs; ++i) {
    LayerSpec s{};
    const bool tc_shape = i % 5 == 0;
    // Half of the others use conv settings: stride, padding, dilation, conv groups.
    const bool settings = !tc_shape && i % 2 == 1;
    s.batch = pick(1, 4);
    s.conv_groups = settings ? pick(1, 4) : 1;
    s.cin = s.conv_groups * pick(1, settings ? 3 : 6);
    s.cout = tc_shape ? 16 : s.conv_groups * pick(1, 40 / s.conv_groups);
    std::vector<int64_t> divisors;
    for (int64_t g = 1; g <= s.cout; ++g)
      if (s.cout % g == 0) divisors.push_back(g);
    s.groups = divisors[pick(0, static_cast<int>(divisors.size()) - 1)];
    for (int a = 0; a < 3; ++a) {
      s.kernel[a] = tc_shape ? 4 : pick(1, 7);
      if (settings) {
        s.stride[a] = pick(1, 3);
        s.dilation[a] = pick(1, 2);
        s.padding[a] = pick(0, 3);
      }
      const int64_t reach = s.dilation[a] * (s.kernel[a] - 1) + 1;
      s.spatial[a] = std::max<int64_t>(1, reach - 2 * s.padding[a] + pick(0, a == 0 ? 6 : 14)) +
                     (tc_shape ? (a == 0 ? 6 : 15) : 0);
    }
    // Half of the others with W a multiple of 4, which the box kernel's tensor copies need.
    if (!tc_shape && i % 4 < 2) s.spatial[2] = (s.spatial[2] + 3) / 4 * 4;
    s.bias = pick(0, 1);
    s.affine = pick(0, 1);
    FusedLayer layer = random_layer(s, gen);
    layer.eps = std::pow(10.0, -pick(1, 6));
    const at::Tensor x = random_input(s, gen);
    const Precision precision = pick(0, 1) ? Precision::kAccurate : Precision::kTF32;
    const FusedLayer on_gpu = layer_to(layer, cuda_, at::kFloat);
    const Plan plan = fused_plan(x.to(cuda_), on_gpu, precision);
    const bool tc = on_tensor_cores(plan);
    tensorcore += tc;
    ++per_kernel[kernel_id(plan.kernel)];
    const double bound = tc && precision == Precision::kTF32 ? kTF32Bound : kFloat32Bound;
    at::Tensor out = at::full({s.batch, s.cout}, NAN, x.options().device(cuda_));
    fused_forward_out(x.to(cuda_), on_gpu, precision, out);
    const at::Tensor ref = native_forward(x.to(cuda_, at::kDouble), layer_to(layer, cuda_, at::kDouble)).cpu();
    const double err = (out.cpu().to(at::kDouble) - ref).norm().item<double>();
    double rounding_err = 0;  // ||ref_tf32 - ref||
    if (tc && precision == Precision::kTF32) {
      FusedLayer rounded = layer;
      rounded.weight = k4::round_to_tf32(layer.weight.to(at::kFloat));
      const at::Tensor ref_tf32 =
          native_forward(k4::round_to_tf32(x.to(at::kFloat)).to(cuda_, at::kDouble), layer_to(rounded, cuda_, at::kDouble)).cpu();
      rounding_err = (ref_tf32 - ref).norm().item<double>();
    }
    const double allowed =
        std::max(bound * ref.norm().item<double>(), 2 * rounding_err) + 1e-6 * std::sqrt(double(ref.numel()));
    ASSERT_LE(err, allowed) << "config " << i << " of seed " << seed << ": " << to_string(s) << " eps " << layer.eps
                            << " " << kernel_id(plan.kernel) << (precision == Precision::kTF32 ? " tf32" : " accurate")
                            << " (TF32 rounding of the operands alone: " << rounding_err << ")";
  }
  std::cout << "[ sweep    ] " << kConfigs << " configurations:";
  for (const auto& [kernel, count] : per_kernel) std::cout << " " << kernel << " " << count;
  std::cout << std::endl;
  // Kernels of up to 7 per axis: on sm_80 on every configuration takes a tensor-core kernel but
  // those with one input channel per conv group, which take the depthwise kernel; the box kernel
  // takes those with W a multiple of 4 (its footprints fit at the sweep's sizes), the gather
  // kernel the rest.
  EXPECT_EQ(tensorcore + per_kernel["depthwise"], kConfigs);
  EXPECT_EQ(per_kernel["general"], 0);
  EXPECT_GE(per_kernel["igemm-box"], kConfigs / 4);
  EXPECT_GE(per_kernel["igemm"], kConfigs / 8);
}

TEST_F(FusedCuda, Float16AndBFloat16ComputeInFloat32) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(19);
  const std::vector<LayerSpec> matrix = shape_matrix();
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16})
    for (const LayerSpec& spec : {matrix[0], matrix[2], matrix.back()}) {
      SCOPED_TRACE(dtype_name(dtype) + " " + to_string(spec));
      expect_reduced_precision_matches_float64(spec, dtype, cuda_, gen);
    }
}

// Both modes on the kernel-4x4x4 path (standard layer) and the implicit-GEMM kernel (kernel 3).
TEST_F(FusedCuda, NanAndInfPropagateAsInPyTorch) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20);
  const LayerSpec standard{4, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const LayerSpec general{4, 3, 8, 2, {3, 3, 3}, {6, 7, 8}, true, true};
  ASSERT_TRUE(on_tensor_cores(fused_plan(random_input(standard, gen).to(cuda_),
                                         layer_to(random_layer(standard, gen), cuda_, at::kFloat), Precision::kAccurate)));
  for (const Precision precision : {Precision::kAccurate, Precision::kTF32}) {
    const double bound = precision == Precision::kTF32 ? kTF32Bound : kFloat32Bound;
    expect_special_values_propagate_as_native(standard, cuda_, precision, bound, gen);
    expect_special_values_propagate_as_native(general, cuda_, precision, bound, gen);
  }
}

TEST_F(FusedCuda, ConstantChannelGroupGivesBeta) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  const LayerSpec standard{2, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  const LayerSpec general{2, 3, 12, 3, {3, 3, 3}, {6, 7, 8}, true, true};
  expect_constant_group_gives_beta(standard, cuda_, Precision::kAccurate, kFloat32Bound, gen);
  expect_constant_group_gives_beta(standard, cuda_, Precision::kTF32, kTF32Bound, gen);
  expect_constant_group_gives_beta(general, cuda_, Precision::kAccurate, kFloat32Bound, gen);
}

// An input of more than 2^31 elements (B = 43,691 at the standard shape: 8.6 GB): every index that
// can pass 2^31 must be 64-bit. Native cannot run it whole (its conv output would be 75 GB), so the
// first and last samples of the whole batch's run are checked against float64, and the fused
// pipeline run on those samples alone against native and float64 and, where it takes the same
// kernel, against the whole batch's run bit for bit (a sample's result depends on nothing else).
TEST_F(FusedCuda, InputOverTwoToThe31Elements) {
  constexpr int64_t kBatch = 43691;
  const LayerSpec standard{kBatch, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true};
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  if (free_bytes < (12ull << 30)) GTEST_SKIP() << "needs 12 GB of free GPU memory, " << (free_bytes >> 20) << " MB free";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const LayerSpec general{kBatch, 3, 8, 2, {3, 3, 3}, {16, 32, 32}, true, true};
  at::Tensor x = at::empty({kBatch, 3, 16, 32, 32}, at::TensorOptions(cuda_));
  ASSERT_GT(x.numel(), int64_t{1} << 31);
  x.uniform_(0.0, 1.0);  // on the GPU: 8.6 GB through the CPU would take seconds
  const struct {
    LayerSpec spec;
    Precision precision;
    double bound;
  } cases[] = {{standard, Precision::kAccurate, kFloat32Bound},
               {standard, Precision::kTF32, kTF32Bound},
               {general, Precision::kAccurate, kFloat32Bound}};
  for (const auto& c : cases) {
    SCOPED_TRACE(to_string(c.spec) + (c.precision == Precision::kTF32 ? " tf32" : " accurate"));
    const FusedLayer layer_cpu = random_layer(c.spec, gen);
    const FusedLayer layer = layer_to(layer_cpu, cuda_, at::kFloat);
    std::cout << "[ info     ] " << fused_kernel_name(x, layer, c.precision) << std::endl;
    at::Tensor out = at::full({kBatch, c.spec.cout}, NAN, x.options());
    fused_forward_out(x, layer, c.precision, out);
    EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << "unwritten (NaN-poisoned) or non-finite output";
    for (const int64_t first : {int64_t{0}, kBatch - 5}) {
      SCOPED_TRACE("samples " + std::to_string(first) + "..");
      const at::Tensor samples = x.slice(0, first, first + 5);
      const at::Tensor alone = expect_matches_references(layer_cpu, samples.cpu(), cuda_, c.bound, c.precision);
      // Five samples alone take the mma.sync kernel; the whole batch, at the standard shape, the
      // wgmma planes kernel; the implicit-GEMM kernel splits a sample's positions into fewer tiles
      // where the batch fills the GPU: the same bits only where both runs have the same plan.
      const Plan alone_plan = fused_plan(samples, layer, c.precision), batch_plan = fused_plan(x, layer, c.precision);
      if (alone_plan.kernel == batch_plan.kernel && alone_plan.tiles == batch_plan.tiles)
        EXPECT_TRUE(at::equal(out.slice(0, first, first + 5), alone));
      const at::Tensor f64 = native_forward(samples.cpu().to(at::kDouble), layer_to(layer_cpu, at::kCPU, at::kDouble));
      EXPECT_LE(relative_l2(out.slice(0, first, first + 5), f64), c.bound) << "the whole batch's run vs float64";
    }
  }
}

TEST_F(FusedCuda, EmptyBatchGivesEmptyResult) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(14);
  const LayerSpec spec{0, 3, 16, 4, {4, 4, 4}, {8, 8, 8}, true, true};
  const FusedLayer layer = layer_to(random_layer(spec, gen), cuda_, at::kFloat);
  EXPECT_EQ(fused_forward(random_input(spec, gen).to(cuda_), layer).sizes(), at::IntArrayRef({0, 16}));
}

}  // namespace
}  // namespace fused3d::test
