// The GroupNorm-mean epilogue kernel: (B, tiles, C) partial moments -> out (B, C), one warp per
// (sample, group) in the form moments.h's with_epilogue_form picks for the group's channel count.
// Programmatic dependent launch: the moments kernels call ptx::launch_dependents at their start, so
// this grid is scheduled while they finish instead of after they have ended (B = 1: 27.8 -> 19.4 us
// accurate, 25.3 -> 14.0 us tf32, with the two-pass epilogue; H100).
#include "epilogue.h"

#include "persistent_grid.h"
#include "ptx.h"


namespace fused3d::epilogue {

constexpr int kThreads = 256;  // 8 (sample, group) pairs, a warp each, per block
static_assert(kThreads % 32 == 0, "the epilogue runs whole warps");

// ------------------------------------------------------------------------------------------------
// CUDA kernels

// Form kForm (moments.h: 0 the lanes form, else the warp form for groups of kForm channels).
template <int kForm>
__global__ void groupnorm_mean_epilogue_kernel(EpilogueParams p) {
  ptx::wait_for_prerequisite_grid();  // the moments kernel's partials are complete and visible
  const long long i = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (i >= p.batch * p.groups) return;  // whole warps: blockDim.x is a multiple of 32
  groupnorm_mean_epilogue_group<kForm>(p, i);
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

void launch(const EpilogueParams& p, cudaStream_t stream) {
  const long long threads = p.batch * p.groups * 32;  // a warp per (sample, group)
  void (*kernel)(EpilogueParams) = nullptr;
  with_epilogue_form<32>(p.channels / p.groups,
                         [&](auto form) { kernel = groupnorm_mean_epilogue_kernel<decltype(form)::value>; });
  launch_dependent(kernel, dim3(static_cast<unsigned>((threads + kThreads - 1) / kThreads)), dim3(kThreads), 0,
                   stream, p);
}

}  // namespace fused3d::epilogue
