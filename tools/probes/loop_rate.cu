// Probe: how fast does the fast kernel's MMA loop run per warp, alone and with other warps on its
// SM sub-partition, and does it run faster when the warps of a sub-partition are out of phase?
// (docs/RECORD.md, "The MMA loop alone", has the results.)
//
// Each active warp repeats what an MMA warp of conv3d_k4_mma.cu does for one item: three
// channel steps of the loop over 13 input rows (two 8-byte shared loads per row, 8 m16n8k16 MMAs
// per row in the tf32 mode, 16 in the accurate mode, into 20 accumulators), then, if asked, the
// statistics of the 10 x 16 tile (gate, shift, sum, square: 4 FP32 instructions per value). No
// barriers, no producers: the warps are independent, so a start offset stays.
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a tools/probes/loop_rate.cu -o loop_rate && ./loop_rate
#include "cuda_check.h"

#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

constexpr int kRows = 10, kInputRows = 13, kKernel = 4, kRowEntries = 32, kStages = 3;
constexpr int kThreads = 512;  // as the fast kernel: 16 warps, 4 per sub-partition (warp % 4)
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kSecondColumnTile = 13;  // ow0 of the standard layer's second column tile (OW 29 = 16 + 13)

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint4& a, const uint2& b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
}

template <int kParts>
__device__ __forceinline__ void channel(const uint2* column, const uint4 (&a)[kKernel][kParts], float (&acc)[kRows][2][4]) {
#pragma unroll
  for (int r = 0; r < kInputRows; ++r) {
    const uint2 b[2] = {column[r * kRowEntries], column[r * kRowEntries + 8]};
#pragma unroll
    for (int kh = 0; kh < kKernel; ++kh) {
      const int j = r - kh;
      if (j < 0 || j >= kRows) continue;
#pragma unroll
      for (int part = 0; part < kParts; ++part)
#pragma unroll
        for (int half = 0; half < 2; ++half) mma_f16(acc[j][half], a[kh][part], b[half]);
    }
  }
}

// The fast kernel's per-value statistics (warp_tile_moments' row loop), on the accumulators.
__device__ __forceinline__ float statistics(float (&acc)[kRows][2][4], float pivot) {
  float sum[4] = {}, squares[4] = {};
#pragma unroll
  for (int j = 0; j < kRows; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = acc[j][half][e];
        const float d = fmaf(v, fminf(fmaxf(fmaf(v, 1.f / 6.f, 0.5f), 0.f), 1.f), -pivot);
        sum[e] += d;
        squares[e] = fmaf(d, d, squares[e]);
      }
  return sum[0] + sum[1] + sum[2] + sum[3] + squares[0] + squares[1] + squares[2] + squares[3];
}

// active: MMA warps per sub-partition (warps w < 4 * active run, w % 4 = sub-partition).
// offset: warp w first spins (w / 4) * offset cycles, so the sub-partition's warps are out of phase.
template <int kParts>
__global__ void __launch_bounds__(kThreads, 1)
    loop_kernel(const uint2* fragments, const uint4* weights, int items, int active, long long offset, int with_statistics,
                long long* cycles, float* sink) {
  __shared__ uint2 stages[kStages][kInputRows + 1][kRowEntries];
  for (int i = threadIdx.x; i < kStages * (kInputRows + 1) * kRowEntries; i += kThreads)
    (&stages[0][0][0])[i] = fragments[i];
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp >= 4 * active) return;
  uint4 a[kKernel][kParts];
#pragma unroll
  for (int kh = 0; kh < kKernel; ++kh)
#pragma unroll
    for (int part = 0; part < kParts; ++part) a[kh][part] = weights[(kh * kParts + part) * 32 + lane];
  float acc[kRows][2][4] = {};
  float result = 0.f;
  const long long start = clock64();
  while (clock64() - start < (warp / 4) * offset) {
  }
  const long long begin = clock64();
#pragma unroll 1
  for (int item = 0; item < items; ++item) {
#pragma unroll 1
    for (int step = 0; step < 3; ++step)
      channel<kParts>(&stages[(item + step) % kStages][0][0] + (warp % 2) * kSecondColumnTile + lane / 4 + lane % 4, a, acc);
    if (with_statistics) result += statistics(acc, result);
  }
  const long long end = clock64();
  if (lane == 0) cycles[blockIdx.x * kWarpsPerBlock + warp] = end - begin;
  float total = result;
#pragma unroll
  for (int j = 0; j < kRows; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int e = 0; e < 4; ++e) total += acc[j][half][e];
  sink[blockIdx.x * kThreads + threadIdx.x] = total;
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int entries = kStages * (kInputRows + 1) * kRowEntries;
  std::vector<__half> host_fragments(entries * 4), host_weights(kKernel * 2 * 32 * 8);
  srand(1);
  for (auto& v : host_fragments) v = __float2half(rand() / float(RAND_MAX) - 0.5f);
  for (auto& v : host_weights) v = __float2half((rand() / float(RAND_MAX) - 0.5f) * 0.01f);
  uint2* fragments;
  uint4* weights;
  long long* cycles;
  float* sink;
  CHECK(cudaMalloc(&fragments, entries * sizeof(uint2)));
  CHECK(cudaMalloc(&weights, host_weights.size() * sizeof(__half)));
  CHECK(cudaMalloc(&cycles, sms * kWarpsPerBlock * sizeof(long long)));
  CHECK(cudaMalloc(&sink, sms * kThreads * sizeof(float)));
  CHECK(cudaMemcpy(fragments, host_fragments.data(), entries * sizeof(uint2), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(weights, host_weights.data(), host_weights.size() * sizeof(__half), cudaMemcpyHostToDevice));
  const int items = 200;
  std::printf("mode      stats  MMA warps/SP  offset  | cycles per item per warp  cycles per MMA per warp  SP cycles per MMA\n");
  const auto run = [&](int parts, int with_statistics, int active, long long offset) {
    for (int rep = 0; rep < 2; ++rep) {  // the first launch warms up
      if (parts == 1)
        loop_kernel<1><<<sms, kThreads>>>(fragments, weights, items, active, offset, with_statistics, cycles, sink);
      else
        loop_kernel<2><<<sms, kThreads>>>(fragments, weights, items, active, offset, with_statistics, cycles, sink);
      CHECK(cudaGetLastError());
      CHECK(cudaDeviceSynchronize());
    }
    std::vector<long long> c(sms * kWarpsPerBlock);
    CHECK(cudaMemcpy(c.data(), cycles, c.size() * sizeof(long long), cudaMemcpyDeviceToHost));
    double mean = 0;
    for (int b = 0; b < sms; ++b)
      for (int w = 0; w < 4 * active; ++w) mean += c[b * kWarpsPerBlock + w];
    mean /= sms * 4 * active;
    const double mmas = 3.0 * 40 * 2 * parts;  // per item: 3 channels x 40 (row, kh) x 2 halves x parts
    const double per_item = mean / items;
    std::printf("%-9s %5s  %12d  %6lld  | %24.0f  %23.1f  %17.2f\n", parts == 1 ? "tf32" : "accurate",
                with_statistics ? "yes" : "no", active, offset, per_item, per_item / mmas, per_item / mmas / active);
    return per_item;
  };
  for (int parts = 1; parts <= 2; ++parts)
    for (int with_statistics = 0; with_statistics <= 1; ++with_statistics)
      for (int active = 1; active <= 4; ++active) {
        const double lockstep = run(parts, with_statistics, active, 0);
        // Out of phase: the sub-partition's warps start 1/active of an item apart.
        if (with_statistics && active > 1) run(parts, with_statistics, active, static_cast<long long>(lockstep / active));
      }
  return 0;
}
