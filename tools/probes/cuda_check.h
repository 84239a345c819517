// CHECK(call): a CUDA runtime call that must succeed, else the probe prints where and exits. Shared
// by the standalone probes (built by nvcc alone, without libtorch's checks).
#pragma once

#include <cstdio>
#include <cstdlib>

#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t e = (call);                                                           \
    if (e != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)
