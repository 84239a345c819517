// What the two tensor-core kernels for kernel 4x4x4 and 16 output channels share: the mma.sync
// kernel (conv3d_k4_mma.cu) and the wgmma planes kernel (conv3d_k4_planes.cu).
//
//   - the operand formats (Operands);
//   - operand conversion: float -> fp16 pairs, float -> TF32;
//   - the fp16 range check: the fast path holds x in fp16, and where x leaves fp16's range (or is
//     all too small for its precision) a warp recomputes its outputs on the TF32 route, from x in
//     global memory, on warp tiles of kRows x kCols outputs (WarpTileTraits);
//   - the statistics of a lane group's pivot-shifted sums (lanes_to_moments) and of a warp tile
//     (warp_tile_moments).
//
// Accumulators hold y / u, u a power of two per output channel (the fp16 weights are scaled by 1/u
// into [1, 2), tensorcore_weights.cu), and u = 1 on the TF32 route: the statistics scale back
// exactly at the end. OPTIMIZATION.md 3 explains the two precision modes.
#pragma once

#include "k4_geometry.h"
#include "moments.h"
#include "ptx.h"

#include <cuda_fp16.h>

#include <cstdint>

namespace fused3d::k4 {

// How the weights and x reach the tensor cores: fp16 (x, and the weights split hi + lo in the
// accurate mode) on the fast path, TF32 on the fallback route.
enum class Operands { kHalfSplit, kHalf, kTf32Split, kTf32 };
__host__ __device__ constexpr bool is_half(Operands o) { return o == Operands::kHalfSplit || o == Operands::kHalf; }
__host__ __device__ constexpr int weight_parts(Operands o) { return (o == Operands::kHalfSplit || o == Operands::kTf32Split) ? 2 : 1; }

constexpr float kHalfMax = 65504.f;            // largest finite fp16
constexpr float kHalfSmallest = 1.f / 1024.f;  // below, fp16 keeps too few bits: use TF32
// An item whose max |x| is above kHalfMax or below kHalfSmallest (or NaN, which then propagates as
// in PyTorch) takes the TF32 route.

// The TF32 route below takes either kernel's parameters P, which name the tensors alike: x (B, Cin,
// D, H, W) contiguous, sample_stride (Cin*D*H*W), d, h, w; tf32_w, the route's (Cin, 4 kd, 2 kh
// pairs, parts, 32 lanes) A fragments. Both round x - x_pivot, not x (k4_sample_terms.h).

// ---- operand conversion

using ptx::to_tf32;

__device__ __forceinline__ uint32_t half_pair(float low, float high) {
  const __half2 h = __floats2half2_rn(low, high);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// ---- the TF32 route

// Channel ci's slab in x: plane od of `sample`, from input row `row0` on.
template <typename P>
__device__ __forceinline__ const float* channel_slab(const P& p, const float* sample, int od, int row0, int ci) {
  return sample + (static_cast<long long>(ci * p.d + od) * p.h + row0) * p.w;
}

// acc[j][half] = {channel g at columns 2t, 2t+1; channel g+8 at the same} of output row j,
// columns 8*half + ...: `bias` (16 channels) of channels g and g+8.
__device__ __forceinline__ void init_accumulators(const float* bias, float (&acc)[kRows][2][4]) {
  const int g = (threadIdx.x % 32) / 4;
  const float b0 = bias[g], b1 = bias[g + 8];
#pragma unroll
  for (int j = 0; j < kRows; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      acc[j][half][0] = b0;
      acc[j][half][1] = b0;
      acc[j][half][2] = b1;
      acc[j][half][3] = b1;
    }
}

// acc += channel ci's contribution on the TF32 route, straight from x - x_pivot, x in global memory
// (`slab`: channel_slab of the tile's first plane and input row): m16n8k8 slices (kd; kh pair q) x
// kw with k = kw + 4s for kh = 2q + s, so b0 = x[row j+2q][col g+t], b1 = x[row j+2q+1][same] (+8
// for the second n8).
template <Operands kOps, typename P>
__device__ __forceinline__ void accumulate_channel_tf32(const P& p, const float* slab, int ci, float x_pivot,
                                                        const WarpTile& tile, float (&acc)[kRows][2][4]) {
  constexpr int kParts = weight_parts(kOps);
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const float* base = slab + tile.slab_row * p.w + tile.ow0 + g + t;
  const int plane = p.h * p.w;
#pragma unroll 1
  for (int kd = 0; kd < kKernel; ++kd) {
    const float* rows = base + kd * plane;
    uint32_t x[kInputRows][2];  // [row][n8 half]
#pragma unroll
    for (int r = 0; r < kInputRows; ++r) {
      x[r][0] = to_tf32(__ldg(rows + r * p.w) - x_pivot);
      x[r][1] = to_tf32(__ldg(rows + r * p.w + 8) - x_pivot);
    }
    const float4* w = p.tf32_w + (ci * kKernel + kd) * 2 * kParts * 32 + lane;
    float4 a[2][kParts];  // [q][part]
#pragma unroll
    for (int q = 0; q < 2; ++q)
#pragma unroll
      for (int part = 0; part < kParts; ++part) a[q][part] = __ldg(w + (q * kParts + part) * 32);
#pragma unroll
    for (int j = 0; j < kRows; ++j)
#pragma unroll
      for (int q = 0; q < 2; ++q)
#pragma unroll
        for (int part = kParts - 1; part >= 0; --part)
#pragma unroll
          for (int half = 0; half < 2; ++half)
            ptx::mma_tf32(acc[j][half], a[q][part], x[j + 2 * q][half], x[j + 2 * q + 1][half]);
  }
}

// ---- statistics

// One channel's Moments from its lanes' pivot-shifted sums s and sums of squares q: the lanes that
// hold the channel (xor distances kFirstLane .. < kEndLane) add theirs, and the sums, in units of
// the accumulator, are scaled back by `unscale`. count > 0. __fdividef: 2 ulp instead of IEEE
// division's ~10 instructions and a slow-path branch, per item.
template <int kFirstLane, int kEndLane>
__device__ __forceinline__ Moments<float> lanes_to_moments(float s, float q, float count, float pivot, float unscale) {
#pragma unroll
  for (int offset = kFirstLane; offset < kEndLane; offset *= 2) {
    s += __shfl_xor_sync(0xffffffffu, s, offset);
    q += __shfl_xor_sync(0xffffffffu, q, offset);
  }
  s *= unscale;
  q *= unscale * unscale;
  const float deviation = __fdividef(s, count);
  return {count, pivot * unscale + deviation, fmaxf(q - s * deviation, 0.f)};
}

// Moments of the warp tile's outputs (hardswish applied) for channels g (c = 0) and g + 8 (c = 1),
// returned in lanes t = 0. The accumulator holds y / u (u = the channel's power-of-two unscale; 1 on
// the TF32 route), so everything is computed in those units and scaled back exactly at the end:
// the gate is one saturating FMA on acc with u/6, and d = (h - pivot)/u one FMA. All lanes of a
// channel shift by one pivot, a value from the tile itself, so sum(d^2) does not cancel the way a
// plain sum of squares would when |mean| >> std, and lanes merge by addition. Per output: 4
// instructions. Duplicate columns are a fixed set per lane (kept out by keeping one sum per column
// class and selecting at the end); duplicate rows are leading rows (the loop stops).
// half_unscale: u of channels g and g + 8, read once per kernel, not per item (two global loads
// whose latency every item's statistics waited for).
__device__ __forceinline__ void warp_tile_moments(const WarpTile& tile, const float2& half_unscale, bool half_operands,
                                                  const float (&acc)[kRows][2][4], Moments<float> (&moments)[2]) {
  const int lane = threadIdx.x % 32;
  const int t = lane % 4;
  float unscale[2], gate_scale[2], pivot[2], sum[2][4] = {}, squares[2][4] = {};
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    unscale[c] = half_operands ? (c == 0 ? half_unscale.x : half_unscale.y) : 1.f;
    gate_scale[c] = unscale[c] * (1.0f / 6.0f);  // exact: unscale is a power of two
    const float last = acc[kRows - 1][0][2 * c];  // the last row is never a duplicate
    pivot[c] = __shfl_sync(0xffffffffu, last * hardswish_gate_scaled(last, gate_scale[c]), lane & ~3);
  }
#pragma unroll
  for (int j = kRows - 1; j >= 0; --j) {
    if (j < tile.duplicate_rows) break;  // leading rows belong to the previous row tile
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int c = 0; c < 2; ++c)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float a = acc[j][half][2 * c + e];
          const float d = fmaf(a, hardswish_gate_scaled(a, gate_scale[c]), -pivot[c]);
          sum[c][2 * half + e] += d;
          squares[c][2 * half + e] = fmaf(d, d, squares[c][2 * half + e]);
        }
  }
  const float count = static_cast<float>((kRows - tile.duplicate_rows) * (kCols - tile.duplicate_cols));
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    float s = 0.f, q = 0.f;
#pragma unroll
    for (int cls = 0; cls < 4; ++cls) {
      const bool kept = 8 * (cls / 2) + 2 * t + cls % 2 >= tile.duplicate_cols;  // column ow0 + that
      s += kept ? sum[c][cls] : 0.f;
      q += kept ? squares[c][cls] : 0.f;
    }
    // Lanes 4g .. 4g+3 hold the same channels; a warp tile always owns a row and a column.
    moments[c] = lanes_to_moments<1, 4>(s, q, count, pivot[c], unscale[c]);
  }
}

}  // namespace fused3d::k4
