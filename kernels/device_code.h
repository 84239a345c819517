// What the machine code a build holds for a device was compiled for, read from the code itself
// (device_code.cu): whatever the build's architecture list (CMake's, or TORCH_CUDA_ARCH_LIST for
// the Python extension), the plan runs a kernel only where the loaded code has its instructions.
#pragma once

namespace fused3d {

struct DeviceCode {
  int arch = 0;        // __CUDA_ARCH__ of the loaded code: 900 for sm_90 and sm_90a, 800 for sm_80, ...
  bool wgmma = false;  // the arch-specific sm_90a target: wgmma and setmaxnreg
};

// Read once per device (a device variable compiled per target, copied from the module the driver
// loaded for it) and cached.
DeviceCode device_code(int device);

}  // namespace fused3d
