// Probe: does wgmma m64n16k16 (A from registers, B from shared memory through a descriptor) give
// the fragment layouts the fast kernel assumes, and how many fp16 tensor FLOPs per second do
// wgmma m64n16k16 and mma.sync m16n8k16 reach on this GPU? (docs/OPTIMIZATION.md quotes the rates.)
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a tools/probes/mma_rate.cu -o mma_rate && ./mma_rate
#include "cuda_check.h"
#include "wgmma_probe.h"

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

__device__ __forceinline__ void wgmma_m64n16k16(float (&d)[8], const uint32_t (&a)[4], uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}

// D = A (64 x 16) * B (16 x 16), A row-major, B as b[k][n].
__global__ void layout_kernel(const __half* a, const __half* b, float* d) {
  __shared__ alignas(128) __half b_smem[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) b_smem[wgmma::b_offset(i / 16, i % 16)] = b[i];
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row = 16 * warp + g;
  uint32_t af[4];
  const auto pair = [&](int r, int k) {
    __half2 h = __halves2half2(a[r * 16 + k], a[r * 16 + k + 1]);
    return *reinterpret_cast<uint32_t*>(&h);
  };
  af[0] = pair(row, 2 * t);
  af[1] = pair(row + 8, 2 * t);
  af[2] = pair(row, 2 * t + 8);
  af[3] = pair(row + 8, 2 * t + 8);
  float acc[8] = {};
  wgmma::fence();
  wgmma_m64n16k16(acc, af, wgmma::descriptor(b_smem), 0);
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::pin(acc);
  for (int i = 0; i < 2; ++i) {
    d[row * 16 + 8 * i + 2 * t] = acc[4 * i];
    d[row * 16 + 8 * i + 2 * t + 1] = acc[4 * i + 1];
    d[(row + 8) * 16 + 8 * i + 2 * t] = acc[4 * i + 2];
    d[(row + 8) * 16 + 8 * i + 2 * t + 1] = acc[4 * i + 3];
  }
}

constexpr int kAccSets = 10;  // independent accumulators per warp, as in a 10-row warp tile
constexpr int kIters = 4096;

__global__ void __launch_bounds__(128) wgmma_rate_kernel(float* sink) {
  __shared__ alignas(128) __half b_smem[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) b_smem[i] = __float2half(0.001f * (i % 7));
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  uint32_t a[4] = {0x3c003c00u, 0x3c003c00u, 0x3c003c00u, threadIdx.x};
  float acc[kAccSets][8] = {};
  const uint64_t desc = wgmma::descriptor(b_smem);
  for (int it = 0; it < kIters; ++it) {
#pragma unroll
    for (int s = 0; s < kAccSets; ++s) wgmma::pin(acc[s]);
    wgmma::fence();
#pragma unroll
    for (int s = 0; s < kAccSets; ++s) wgmma_m64n16k16(acc[s], a, desc, 1);
    wgmma::commit();
    wgmma::wait<0>();
#pragma unroll
    for (int s = 0; s < kAccSets; ++s) wgmma::pin(acc[s]);
  }
  float s = 0;
  for (int i = 0; i < kAccSets; ++i)
    for (int j = 0; j < 8; ++j) s += acc[i][j];
  if (s == 12345.f) sink[0] = s;
}

__global__ void __launch_bounds__(128) mma_sync_rate_kernel(float* sink) {
  uint32_t a[4] = {0x3c003c00u, 0x3c003c00u, 0x3c003c00u, threadIdx.x};
  uint32_t b[2] = {0x1c001c00u, threadIdx.x};
  float acc[kAccSets][2][4] = {};
  for (int it = 0; it < kIters; ++it) {
#pragma unroll
    for (int s = 0; s < kAccSets; ++s)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(acc[s][h][0]), "+f"(acc[s][h][1]), "+f"(acc[s][h][2]), "+f"(acc[s][h][3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  float s = 0;
  for (int i = 0; i < kAccSets; ++i)
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 4; ++j) s += acc[i][h][j];
  if (s == 12345.f) sink[0] = s;
}

int main() {
  std::vector<float> d, ref;
  const int bad = check_layout(layout_kernel, 16, d, ref);
  std::printf("layout: %s (%d of %zu wrong; d[0..3] %g %g %g %g ref %g %g %g %g)\n", bad ? "WRONG" : "ok", bad,
              d.size(), d[0], d[1], d[2], d[3], ref[0], ref[1], ref[2], ref[3]);
  float* dd;  // the rate kernels' sink
  CHECK(cudaMalloc(&dd, sizeof(float)));

  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int per_sm : {1, 2, 3, 4}) {
    const int blocks = prop.multiProcessorCount * per_sm;
    for (int kind = 0; kind < 2; ++kind) {
      float best = 1e30f;
      for (int rep = 0; rep < 5; ++rep) {
        CHECK(cudaEventRecord(start));
        if (kind == 0)
          wgmma_rate_kernel<<<blocks, 128>>>(dd);
        else
          mma_sync_rate_kernel<<<blocks, 128>>>(dd);
        CHECK(cudaEventRecord(stop));
        CHECK(cudaEventSynchronize(stop));
        float ms;
        CHECK(cudaEventElapsedTime(&ms, start, stop));
        best = std::fmin(best, ms);
      }
      // Per block: 4 warps x kIters x kAccSets x (16 positions x 16 channels x 16 k) MACs.
      const double flops = 2.0 * blocks * 4 * double(kIters) * kAccSets * 16 * 16 * 16;
      std::printf("%-9s blocks/SM %d: %.3f ms, %.0f TFLOP/s\n", kind == 0 ? "wgmma" : "mma.sync", per_sm, best,
                  flops / (best * 1e-3) / 1e12);
    }
  }
  return 0;
}
