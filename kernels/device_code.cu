// device_code(): a device variable whose initial value is compiled per target says which one the
// driver loaded for a device.
#include "device_code.h"

#include "wgmma.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <array>
#include <mutex>

namespace fused3d {

// __CUDA_ARCH__, plus 1 where the code has wgmma (sm_90a): what device_code reads.
#if defined(__CUDA_ARCH__)
__device__ int compiled_code = __CUDA_ARCH__ + (wgmma::kAvailable ? 1 : 0);
#else
__device__ int compiled_code = 0;
#endif

DeviceCode device_code(int device) {
  static std::mutex mutex;
  static std::array<int, 64> known{};  // per device: compiled_code + 1, 0 while unread
  std::lock_guard<std::mutex> lock(mutex);
  TORCH_CHECK(device >= 0 && device < static_cast<int>(known.size()), "fused3d: device index ", device,
              " out of range");
  if (known[device] == 0) {
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    int value = 0;
    C10_CUDA_CHECK(cudaMemcpyFromSymbol(&value, compiled_code, sizeof(value)));
    known[device] = value + 1;
  }
  const int value = known[device] - 1;
  return {value / 10 * 10, value % 10 == 1};
}

}  // namespace fused3d
