#include "fused3d/errors.h"
#include "fused3d/tensor_io.h"
#include "test_support.h"

#include <cstdio>

namespace fused3d::test {
namespace {

void expect_input_error(const std::string& path, const std::string& fragment) {
  try {
    load_tensor(path);
    FAIL() << "load_tensor(" << path << ") did not throw";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "message must be one line: " << e.what();
  }
}

TEST(TensorIo, RoundTripIsExact) {
  const at::Tensor t = at::randn({3, 4, 5}, at::kDouble);
  const std::string path = ::testing::TempDir() + "/roundtrip.pt";
  save_tensor(path, t);
  EXPECT_TRUE(at::equal(load_tensor(path), t));
  std::remove(path.c_str());
}

TEST(TensorIo, ReadsWhatPythonSaved) {
  const at::Tensor x = load_tensor(fixture("standard_x.pt"));
  EXPECT_EQ(x.sizes(), at::IntArrayRef({2, 3, 16, 32, 32}));
  EXPECT_EQ(x.scalar_type(), at::kFloat);
  EXPECT_GE(x.min().item<float>(), 0.f);  // torch.rand: [0, 1), not zeros
  EXPECT_GT(x.max().item<float>(), 0.5f);
}

TEST(TensorIo, MissingFileIsAnInputError) { expect_input_error(fixture("no_such_file.pt"), "cannot open"); }
TEST(TensorIo, ListIsNotATensor) { expect_input_error(fixture("list.pt"), "expected a single tensor"); }
TEST(TensorIo, TextIsNotATensorFile) { expect_input_error(fixture("text.pt"), "not a tensor file"); }
TEST(TensorIo, TruncatedFileIsRefused) { expect_input_error(fixture("truncated_x.pt"), "not a tensor file"); }

TEST(TensorIo, UnwritableOutputIsAnInputError) {
  EXPECT_THROW(save_tensor(fixture("no_such_dir/out.pt"), at::ones({2})), InputError);
}

}  // namespace
}  // namespace fused3d::test
