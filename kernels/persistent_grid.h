// Launching the fused kernels: the persistent grid of the tensor-core kernels (as many blocks as fit
// on the GPU at once, each walking its share of the work, or one block per work item where there
// are fewer), and programmatic dependent launch, by which a kernel is scheduled while the one
// before it on the stream finishes.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace fused3d {

// Blocks of `kernel` (`threads` threads, `smem` bytes of dynamic shared memory) resident on
// `device` at once, at most `work`. The occupancy query and the shared-memory attribute cost about a
// microsecond each, against ~15 us for a whole B = 1 forward: they run once per (kernel, device,
// size). The attribute is `max_smem`, the kernel's largest size, never this launch's: a smaller
// value set for a later shape would make the launches of a cached larger one fail.
template <typename Kernel>
unsigned persistent_blocks(Kernel kernel, int threads, size_t smem, size_t max_smem, long long work, int device) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, size_t>, int> blocks_per_sm;  // (kernel, device, shared bytes)
  int per_sm = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const std::tuple<const void*, int, size_t> key{reinterpret_cast<const void*>(kernel), device, smem};
    auto found = blocks_per_sm.find(key);
    if (found == blocks_per_sm.end()) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_smem)));
      C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
      found = blocks_per_sm.emplace(key, std::max(per_sm, 1)).first;
    }
    per_sm = found->second;
  }
  const long long resident = static_cast<long long>(per_sm) * at::cuda::getDeviceProperties(device)->multiProcessorCount;
  return static_cast<unsigned>(std::min(work, resident));
}

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the kernel before
// it on the stream (sm_90; an ordinary launch below): it may start once every block of that kernel
// has called ptx::launch_dependents, and must call ptx::wait_for_prerequisite_grid before it reads
// what that kernel writes. It saves the launch's latency between two kernels of one forward.
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = at::cuda::getCurrentDeviceProperties()->major >= 9 ? 1 : 0;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace fused3d
