// Probe: would a wgmma kernel with N = 64 pay where N = 16 did not? (docs/RECORD.md has the results.)
//
// At N = 16 (the 16 channels) a wgmma m64n16k16 ran at about a quarter of the tensor peak in the
// fast kernel. N = 64 takes the four kernel rows into N instead of K: for input row r of a 16-column
// strip, D_r = sum over ci of A(r, ci) x W(ci) with W(ci) = [W(ci, kh 0) | ... | W(ci, kh 3)] (K 16
// = kd x kw as in the fast kernel, N = kh x 16 channels), so one m64n64k16 per (row, channel).
// Output row j is then sum over kh of D_(j+kh)'s kh-th 16 columns, whose lane layout is that of an
// m64n16 accumulator: 8 FADDs per lane and input row per kh, a rolling window of four output rows,
// and each output row's statistics as soon as it is complete (4 FP32 instructions per value, as in
// the fast kernel). Here each warpgroup runs that loop over a 32-row strip per item (the standard
// layer's 29 output rows; 64 positions = two 16-column strips of two planes), from a shared-memory
// stage that stays put (no producers, no barriers).
//
// Modes: 0 the wgmmas alone (D waited for after each row, two of its values summed); 1 and the
// adds into the rolling output rows; 2 and the statistics of each completed row. Blocks of one
// warpgroup, 1 to 4 per SM. Also checks the m64n64k16 layout (A from registers, B K-major without
// swizzle) against a host GEMM. A timing probe: its sums are not checked, and with one D, as here,
// ptxas moved the rows kernel's adds of row r past the wgmmas of the next rows (the same
// instructions, computing on the wrong D). The rows kernel needed two Ds to be correct.
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a tools/probes/wgmma_rows.cu -o wgmma_rows && ./wgmma_rows
#include "cuda_check.h"
#include "wgmma_probe.h"

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

constexpr int kCin = 3, kKernel = 4, kInputRows = 32, kRowEntries = 32, kN = 64;
constexpr int kStageEntries = kCin * kInputRows * kRowEntries;  // 8-byte entries: {half2 planes 0,1; planes 2,3}
constexpr int kTileHalves = 16 * kN;                            // one channel's B: K 16 x N 64
constexpr int kItems = 64;                                      // per warpgroup
constexpr int kItemsStandard = 1024 * 13 / 2;  // the standard batch's planes, two per item

// D = A (64 x 16, row-major) x B (16 x 64): the layout check.
__global__ void layout_kernel(const __half* a, const __half* b, float* d) {
  __shared__ alignas(128) __half b_smem[kTileHalves];
  for (int i = threadIdx.x; i < kTileHalves; i += blockDim.x) b_smem[wgmma::b_offset(i / kN, i % kN)] = b[i];
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row = 16 * warp + g;
  const auto pair = [&](int r, int k) {
    __half2 h = __halves2half2(a[r * 16 + k], a[r * 16 + k + 1]);
    return *reinterpret_cast<uint32_t*>(&h);
  };
  const uint32_t af[4] = {pair(row, 2 * t), pair(row + 8, 2 * t), pair(row, 2 * t + 8), pair(row + 8, 2 * t + 8)};
  float acc[32];
  wgmma::fence();
  wgmma::m64n64k16(acc, af, wgmma::descriptor(b_smem), 0);
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::pin(acc);
  for (int nb = 0; nb < kN / 8; ++nb) {
    d[row * kN + 8 * nb + 2 * t] = acc[4 * nb];
    d[row * kN + 8 * nb + 2 * t + 1] = acc[4 * nb + 1];
    d[(row + 8) * kN + 8 * nb + 2 * t] = acc[4 * nb + 2];
    d[(row + 8) * kN + 8 * nb + 2 * t + 1] = acc[4 * nb + 3];
  }
}

struct Statistics {
  float sum[8] = {}, squares[8] = {};
};
// The fast kernel's per-value statistics on one complete output row (8 values per lane).
__device__ __forceinline__ void row_statistics(const float (&row)[8], float pivot, Statistics& s) {
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float d = fmaf(row[e], fminf(fmaxf(fmaf(row[e], 1.f / 6.f, 0.5f), 0.f), 1.f), -pivot);
    s.sum[e] += d;
    s.squares[e] = fmaf(d, d, s.squares[e]);
  }
}

// D_r's contribution to the rolling output rows: out[r] = D_r[kh 0], out[r - kh] += D_r[kh];
// out[r - 3] is then complete. slot = r % 4 (a constant once the caller's loop is unrolled). Before row 3 the adds go to slots whose rows start
// later (and are set, not added to, then) and the statistics are skipped.
template <bool kStatistics>
__device__ __forceinline__ void add_row(int r, int slot, const float (&d)[32], float (&out)[kKernel][8], float pivot, Statistics& s) {
#pragma unroll
  for (int kh = 0; kh < kKernel; ++kh) {
    float(&o)[8] = out[(slot - kh + kKernel) % kKernel];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = (kh == 0 ? 0.f : o[e]) + d[8 * kh + e];  // an add, not a copy of D's register
  }
  if (r < kKernel - 1) return;
  if (kStatistics)
    row_statistics(out[(slot + 1) % kKernel], pivot, s);
  else
#pragma unroll
    for (int e = 0; e < 8; ++e) s.sum[e] += out[(slot + 1) % kKernel][e];  // keeps the adds alive
}

template <int kMode>
__global__ void __launch_bounds__(128, 4) rows_kernel(const uint2* stage_in, const __half* tiles_in, float* sink, int zero) {
  __shared__ alignas(128) __half tiles[kCin * kTileHalves];
  __shared__ alignas(16) uint2 stage[kStageEntries];
  for (int i = threadIdx.x; i < kCin * kTileHalves; i += blockDim.x) tiles[i] = tiles_in[i];
  for (int i = threadIdx.x; i < kStageEntries; i += blockDim.x) stage[i] = stage_in[i];
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint2* column = stage + (warp % 2) * 13 + g + t;  // the standard layer's two column strips
  const uint64_t desc = wgmma::descriptor(tiles);
  constexpr uint64_t kTileStep = (kTileHalves * 2) >> 4;
  const float pivot = 0.25f * (lane % 3);
  Statistics s;
  float total = 0.f;
#pragma unroll 1
  for (int item = 0; item < kItems; ++item) {
    float d[32], out[kKernel][8];
    // Fully unrolled: with a runtime loop over groups of four rows (the window's period, so the
    // slots stay static) ptxas serialized the wgmmas of modes 1 and 2 (C7511, "insufficient register
    // resources for the wgmma pipeline"), at 128 registers and without a limit alike.
#pragma unroll
    for (int r0 = 0; r0 < kInputRows; r0 += kKernel) {
#pragma unroll
      for (int i = 0; i < kKernel; ++i) {
        const int r = r0 + i;
        uint32_t a[kCin][4];
#pragma unroll
        for (int ci = 0; ci < kCin; ++ci) {  // 4-byte loads straight into the fragment (no moves)
          const uint32_t* at = reinterpret_cast<const uint32_t*>(column + (ci * kInputRows + r) * kRowEntries);
          a[ci][0] = at[0];
          a[ci][1] = at[16];
          a[ci][2] = at[1];
          a[ci][3] = at[17];
        }
        wgmma::pin(d);
        wgmma::fence();
        wgmma::m64n64k16(d, a[0], desc, zero);
#pragma unroll
        for (int ci = 1; ci < kCin; ++ci) wgmma::m64n64k16(d, a[ci], desc + ci * kTileStep, 1);
        wgmma::commit();
        wgmma::wait<0>();
        wgmma::pin(d);
        if (kMode == 0)
          total += d[0] + d[31];
        else
          add_row<kMode == 2>(r, i, d, out, pivot, s);
      }
    }
  }
  for (int e = 0; e < 8; ++e) total += s.sum[e] + s.squares[e];
  if (total == 12345.f) sink[0] = total;
}

template <int kMode>
float time_mode(int blocks, const uint2* stage, const __half* tiles, float* sink) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  float best = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    CHECK(cudaEventRecord(start));
    rows_kernel<kMode><<<blocks, 128>>>(stage, tiles, sink, 0);
    CHECK(cudaEventRecord(stop));
    CHECK(cudaEventSynchronize(stop));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    best = std::fmin(best, ms);
  }
  CHECK(cudaGetLastError());
  return best;
}

int main() {
  std::vector<float> d, ref;
  const int bad = check_layout(layout_kernel, kN, d, ref);
  std::printf("m64n64k16 layout: %s (%d of %zu wrong)\n", bad ? "WRONG" : "ok", bad, d.size());
  __half* tiles;
  float* sink;
  uint2* stage;
  CHECK(cudaMalloc(&sink, 4));

  // Stage and tiles: small fp16 values (0.01 .. 0.08), so nothing overflows.
  std::vector<uint2> stage_host(kStageEntries);
  std::vector<__half> tiles_host(kCin * kTileHalves);
  for (size_t i = 0; i < stage_host.size(); ++i) {
    const __half h = __float2half(0.01f * (1 + i % 8));
    const uint32_t bits = __half_as_ushort(h) * 0x10001u;
    stage_host[i] = make_uint2(bits, bits);
  }
  for (size_t i = 0; i < tiles_host.size(); ++i) tiles_host[i] = __float2half(0.01f * (1 + i % 5));
  CHECK(cudaMalloc(&stage, stage_host.size() * sizeof(uint2)));
  CHECK(cudaMalloc(&tiles, tiles_host.size() * 2));
  CHECK(cudaMemcpy(stage, stage_host.data(), stage_host.size() * sizeof(uint2), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(tiles, tiles_host.data(), tiles_host.size() * 2, cudaMemcpyHostToDevice));

  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const char* names[3] = {"wgmma only", "+ adds", "+ adds + statistics"};
  for (int per_sm : {1, 2, 3, 4}) {
    const int blocks = prop.multiProcessorCount * per_sm;
    for (int mode = 0; mode < 3; ++mode) {
      const float ms = mode == 0   ? time_mode<0>(blocks, stage, tiles, sink)
                       : mode == 1 ? time_mode<1>(blocks, stage, tiles, sink)
                                   : time_mode<2>(blocks, stage, tiles, sink);
      const double items = double(blocks) * kItems;
      const double flops = items * kInputRows * kCin * 2.0 * 64 * kN * 16;
      std::printf("%d warpgroups/SM  %-22s %.3f ms  %.0f TFLOP/s  standard batch's %d items: %.3f ms\n", per_sm,
                  names[mode], ms, flops / (ms * 1e-3) / 1e12, kItemsStandard, ms * kItemsStandard / items);
    }
  }
  return 0;
}
