// Tensors in .pt files, in the format torch.save writes and torch.load reads.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace fused3d {

// The tensor of a torch.save file, its storage read from the file once, straight into memory
// from `allocator` (default: the CPU's; pass the pinned-memory allocator for a tensor that goes to
// a GPU next, whose copy then runs at the full host-to-device rate and can be asynchronous).
// Throws InputError: missing or unreadable file, not a torch.save archive, not a tensor.
at::Tensor load_tensor(const std::string& path, at::Allocator* allocator = nullptr);

// Writes a CPU copy of t; throws InputError when the file cannot be written.
void save_tensor(const std::string& path, const at::Tensor& t);

}  // namespace fused3d
