// Loading the model: a TorchScript export (scripted or traced) or the embedded default, as the
// FusedLayer the pipelines run.
#pragma once

#include "fused_layer.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace fused3d {

struct Model {
  FusedLayer layer;
  std::string source;  // where it came from, for messages
};

// Reads the layer settings from the module's graph: conv stride, padding, dilation, groups and
// GroupNorm groups, eps, affine are taken from the constants of the ops the module calls, weights
// from its parameters. Throws InputError when the file is not such a model.
Model load_model(const std::string& path);

// The standard configuration (Cin 3, Cout 16, kernel 4, 4 groups) with PyTorch's default init drawn
// from `generator`, in the order nn.Conv3d draws it: the same values as Python's
// `torch.manual_seed(seed); Model(3, 16, 4)`.
Model default_model(at::Generator& generator);

// torch.rand(batch, Cin, 16, 32, 32) from `generator`: the standard input for `layer`.
at::Tensor default_input(const FusedLayer& layer, int64_t batch, at::Generator& generator);

// Layer parameters moved to a device and dtype; settings unchanged.
FusedLayer layer_to(const FusedLayer& layer, at::Device device, at::ScalarType dtype);

// "Conv3d(3 -> 16, kernel (4, 4, 4)) -> HardSwish -> GroupNorm(4 groups, eps 1e-05) -> mean".
std::string describe(const FusedLayer& layer);

}  // namespace fused3d
