// The reference: the model's four ops through libtorch (cuDNN on CUDA, oneDNN/ATen on CPU).
#include "fused3d/pipeline.h"

#include <ATen/Context.h>

namespace fused3d {
namespace {

// cuDNN may pick TF32 kernels for float32 convolutions when allowed (PyTorch's default). The
// reference must be float32 arithmetic, so TF32 is off while it runs and restored afterwards.
class NoTF32 {
 public:
  NoTF32() : saved_(at::globalContext().allowTF32CuDNN()) { at::globalContext().setAllowTF32CuDNN(false); }
  ~NoTF32() { at::globalContext().setAllowTF32CuDNN(saved_); }
  NoTF32(const NoTF32&) = delete;
  NoTF32& operator=(const NoTF32&) = delete;

 private:
  bool saved_;
};

}  // namespace

at::Tensor native_forward(const at::Tensor& x, const FusedLayer& l) {
  const NoTF32 exact_float32;
  const at::Tensor y = at::conv3d(x, l.weight, l.bias, l.stride, l.padding, l.dilation, l.conv_groups);
  const at::Tensor h = at::hardswish(y);
  const at::Tensor g = at::group_norm(h, l.norm_groups, l.gamma, l.beta, l.eps);
  return g.mean({2, 3, 4});
}

}  // namespace fused3d
