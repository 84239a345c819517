// Configuration comes from the file: scripted and traced exports of the same model give the same
// layer, non-default settings are read (not assumed), and models fused3d cannot run are refused.
#include "fused3d/errors.h"
#include "fused3d/model.h"
#include "fused3d/tensor_io.h"
#include "test_support.h"

#include <ATen/CPUGeneratorImpl.h>

namespace fused3d::test {
namespace {

void expect_same_tensor(const at::Tensor& a, const at::Tensor& b, const char* what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (a.defined()) EXPECT_TRUE(at::equal(a, b)) << what;
}

void expect_same_layer(const FusedLayer& a, const FusedLayer& b) {
  expect_same_tensor(a.weight, b.weight, "weight");
  expect_same_tensor(a.bias, b.bias, "bias");
  expect_same_tensor(a.gamma, b.gamma, "gamma");
  expect_same_tensor(a.beta, b.beta, "beta");
  EXPECT_EQ(a.stride, b.stride);
  EXPECT_EQ(a.padding, b.padding);
  EXPECT_EQ(a.dilation, b.dilation);
  EXPECT_EQ(a.conv_groups, b.conv_groups);
  EXPECT_EQ(a.norm_groups, b.norm_groups);
  EXPECT_EQ(a.eps, b.eps);
}

TEST(ModelLoader, ScriptedAndTracedGiveTheSameLayer) {
  const FusedLayer scripted = load_model(fixture("standard_scripted.pt")).layer;
  const FusedLayer traced = load_model(fixture("standard_traced.pt")).layer;
  expect_same_layer(scripted, traced);
  EXPECT_EQ(scripted.weight.sizes(), at::IntArrayRef({16, 3, 4, 4, 4}));
  EXPECT_EQ(scripted.norm_groups, 4);
  EXPECT_DOUBLE_EQ(scripted.eps, 1e-5);
  EXPECT_TRUE(unsupported_reason(scripted).empty());
}

TEST(ModelLoader, ReadsNonDefaultSettingsFromBothExports) {
  for (const char* name : {"odd_scripted.pt", "odd_traced.pt"}) {
    SCOPED_TRACE(name);
    const FusedLayer l = load_model(fixture(name)).layer;
    EXPECT_EQ(l.weight.sizes(), at::IntArrayRef({12, 2, 3, 2, 5}));
    EXPECT_FALSE(l.bias.defined());
    EXPECT_EQ(l.norm_groups, 3);
    EXPECT_DOUBLE_EQ(l.eps, 1e-3);
    EXPECT_TRUE(l.gamma.defined() && l.beta.defined());
  }
  expect_same_layer(load_model(fixture("odd_scripted.pt")).layer, load_model(fixture("odd_traced.pt")).layer);
}

TEST(ModelLoader, GroupNormWithoutAffine) {
  for (const char* name : {"noaffine_scripted.pt", "noaffine_traced.pt"}) {
    const FusedLayer l = load_model(fixture(name)).layer;
    EXPECT_FALSE(l.gamma.defined()) << name;
    EXPECT_FALSE(l.beta.defined()) << name;
  }
}

// Scripted and traced exports carry the conv settings differently; both must read the same.
TEST(ModelLoader, ReadsEveryConvSetting) {
  for (const char* name : {"settings_scripted.pt", "settings_traced.pt"}) {
    SCOPED_TRACE(name);
    const FusedLayer l = load_model(fixture(name)).layer;
    EXPECT_EQ(l.stride, (std::array<int64_t, 3>{2, 1, 3}));
    EXPECT_EQ(l.padding, (std::array<int64_t, 3>{1, 0, 2}));
    EXPECT_EQ(l.dilation, (std::array<int64_t, 3>{1, 2, 1}));
    EXPECT_EQ(l.conv_groups, 2);
    EXPECT_EQ(l.norm_groups, 3);
    EXPECT_EQ(l.weight.sizes(), at::IntArrayRef({6, 2, 3, 2, 3}));
    EXPECT_TRUE(unsupported_reason(l).empty()) << unsupported_reason(l);
  }
  // padding='same' with an odd kernel is symmetric zero padding.
  EXPECT_EQ(load_model(fixture("same_padding.pt")).layer.padding, (std::array<int64_t, 3>{1, 1, 1}));
}

TEST(ModelLoader, ReadsFloat16AndBFloat16Models) {
  EXPECT_EQ(load_model(fixture("float16_model.pt")).layer.weight.scalar_type(), at::kHalf);
  EXPECT_EQ(load_model(fixture("bfloat16_model.pt")).layer.weight.scalar_type(), at::kBFloat16);
  const std::string why = unsupported_reason(load_model(fixture("float64_model.pt")).layer);
  EXPECT_NE(why.find("model dtype float64 is not supported"), std::string::npos) << why;
}

TEST(ModelLoader, RefusesModelsWithoutTheExpectedLayers) {
  const struct {
    const char* file;
    const char* fragment;
  } cases[] = {{"relu_model.pt", "has no hardswish"},
               {"scaled_output.pt", "returns something other than the mean"},
               {"reflect_padded.pt", "does not apply the convolution to its input"},
               {"conv2d_model.pt", "has no convolution"},
               {"same_padding_even.pt", "'same' with an even kernel extent along axis 0"},
               {"wrong_gamma.pt", "group_norm weight must have shape (16,)"},
               {"flat_conv_weight.pt", "conv weight must be 5-D"},
               {"standard_x.pt", "is not a TorchScript model"},
               {"text.pt", "is not a TorchScript model"},
               {"no_such_model.pt", "cannot open"}};
  for (const auto& c : cases) {
    try {
      load_model(fixture(c.file));
      ADD_FAILURE() << c.file << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << c.file << ": " << e.what();
    }
  }
}

// The embedded default is Python's `torch.manual_seed(0); Model(3, 16, 4)` followed by
// `torch.rand(...)`, to the bit (the fixture's GroupNorm affine is drawn after the input).
TEST(ModelLoader, EmbeddedDefaultMatchesPythonInit) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const FusedLayer def = default_model(gen).layer;
  const at::Tensor x = default_input(def, 2, gen);
  const FusedLayer exported = load_model(fixture("standard_scripted.pt")).layer;
  EXPECT_TRUE(at::equal(def.weight, exported.weight));
  EXPECT_TRUE(at::equal(def.bias, exported.bias));
  EXPECT_TRUE(at::equal(x, load_tensor(fixture("standard_x.pt"))));
}

}  // namespace
}  // namespace fused3d::test
