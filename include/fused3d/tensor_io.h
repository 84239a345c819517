// Tensors in .pt files, in the format torch.save writes and torch.load reads.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace fused3d {

// Throws InputError: missing or unreadable file, not a torch.save archive, not a tensor.
at::Tensor load_tensor(const std::string& path);

// Writes a CPU copy of t; throws InputError when the file cannot be written.
void save_tensor(const std::string& path, const at::Tensor& t);

}  // namespace fused3d
