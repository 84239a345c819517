// The GroupNorm-mean epilogue on the GPU (epilogue.cu): the (B, tiles, C) partial moments of a
// moments kernel -> out (B, C), a warp per (sample, group) in the forms of moments.h.
#pragma once

#include "moments.h"

#include <cuda_runtime.h>

namespace fused3d::epilogue {

// Launched on `stream` as a programmatic dependent of the moments kernel before it (sm_90): it is
// scheduled while that kernel finishes and waits for its completion before reading anything.
void launch(const EpilogueParams& p, cudaStream_t stream);

}  // namespace fused3d::epilogue
