// Which fused kernel computes a layer on the GPU, and how: one decision, made by make_plan once per
// forward and read by the launchers, the executable's kernel line and --bench, the Python
// operator and the tests.
#pragma once

#include "fused_layer.h"

#include <string>

namespace fused3d {

enum class KernelKind {
  kGeneral,   // conv3d_general.cu: float32 on CUDA cores, every layer
  kIgemm,     // conv3d_igemm.cu: tensor cores (mma.sync, TF32), implicit GEMM, every layer (sm_80 on)
  kIgemmBox,  // conv3d_igemm_box.cu: the same GEMM for float32 x, A from each box's input in shared memory
  kDepthwise, // conv3d_depthwise.cu: float32 on CUDA cores, one input channel per conv group (sm_80 on)
  kK4Mma,     // conv3d_k4_mma.cu: tensor cores (mma.sync), kernel 4x4x4, 16 output channels
  kK4Planes,  // conv3d_k4_planes.cu: tensor cores (wgmma, sm_90a), the standard plane size, B >= 64
};

struct Plan {
  KernelKind kernel = KernelKind::kGeneral;
  Precision precision = Precision::kAccurate;  // the tensor-core kernels' operand rounding
  int tiles = 0;                    // partial moments per (sample, channel), merged by the epilogue
  bool epilogue_in_kernel = false;  // the moments kernel runs the GroupNorm-mean epilogue itself
  size_t shared_bytes = 0;          // the moments kernel's dynamic shared memory per block
  bool wgmma = false;               // the box kernel's steps run as wgmma (else mma.sync)
};

// For a CUDA input and layer that passed the entry's checks (forward_reason, fused_layer.h): the
// fastest kernel that takes them, or the one the environment variable FUSED3D_KERNEL names (a
// kernel_id, for benchmarks and tests that compare kernels on one layer; an error if that kernel
// cannot take the layer or the name is none of them).
Plan make_plan(const FusedLayer& layer, const at::Tensor& x, Precision precision);

// "general", "igemm", "igemm-box", "depthwise", "k4-mma", "k4-planes": what tests and scripts match on.
const char* kernel_id(KernelKind kernel);

// The plan in words, for the executable's kernel line and --bench; begins with kernel_id.
std::string describe(const Plan& plan, at::ScalarType dtype);

}  // namespace fused3d
