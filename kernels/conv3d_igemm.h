// The implicit-GEMM kernel (conv3d_igemm.cu): conv3d -> bias -> hardswish -> per-(sample, channel)
// moments on tensor cores (mma.sync, TF32 operands) for every layer the loader takes; its host
// interface, and the gather's index arithmetic (host and device: the unit tests run it on the host
// and check it against libtorch's conv3d).
//
// The GEMM, per sample and conv group g: out[m, c] = sum_k A[m, k] * W[k, c] with
//   m = (od * OH + oh) * OW + ow                    an output position
//   k = ci * taps + (kd * KH + kh) * KW + kw        an input channel of the group and a kernel tap
//   A[m, k] = x[n, g * Cin/G + ci, od*sd - pd + kd*dd, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//             (0 outside the input: zero padding)
//   W[k, c] = weight[g * Cout/G + c, ci, kd, kh, kw]
// A is gathered on chip and never exists in memory.
#pragma once

#include "fused_layer.h"
#include "moments.h"

#include <cuda_runtime.h>

namespace fused3d::igemm {

struct Traits {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kBlockM = kThreads;         // output positions per step: a thread gathers one row of A
  static constexpr int kWarpM = kBlockM / kWarps;  // rows per warp: two m16 tiles
  static constexpr int kBlockK = 16;               // K per pipeline stage: two m16n8k8 steps
  static constexpr int kStages = 2;
  static constexpr int kMaxNTiles = 8;             // n8 tiles per block: up to 64 output channels
  static constexpr int kBlockN = 8 * kMaxNTiles;
  static constexpr int kMaxSteps = 8;              // steps per tile: a tile is at most 1024 positions
  // A in shared memory is [m][k], a thread's kBlockK values stored as float4s. Fragment loads read
  // columns k = t, t + 4 (t = lane % 4) of rows m = lane / 4 (+ 8): with a pitch of 20 words the 32
  // lanes fall in 32 banks, and so do the float4 stores of each 8 threads.
  static constexpr int kLdA = kBlockK + 4;
  // float16 / bfloat16 inputs: A as [m][k] halves, kBlockK = one m16n8k16 step; fragments read the
  // 32-bit pairs k = 2t, 2t + 8 of rows m = lane / 4 (+ 8), and W is [n][k] the same way: a pitch
  // of 12 words (24 halves) puts the lanes in 32 banks.
  static constexpr int kLdHalf = kBlockK + 8;
  // W is [k][n]: the fragment pattern (k = t, n = lane / 4) wants a pitch of 8 or 24 mod 32 words.
  static constexpr int ld_w(int n) { return n % 16 == 0 ? n + 8 : n; }
  static_assert(kThreads % 32 == 0 && kWarpM == 32, "a warp takes two m16 tiles");
  static_assert(kBlockK % 8 == 0, "whole m16n8k8 steps");
  static_assert(kBlockK % 4 == 0 && kLdA % 4 == 0, "A rows are stored as float4s");
  static_assert(kLdA == 20 || kLdA == 36, "conflict-free A fragments and stores");
  static_assert(kBlockK == 16 && kLdHalf / 2 % 32 == 12, "one m16n8k16 step per slice, conflict-free half fragments");
};
static_assert(Traits::ld_w(8) % 32 == 8 && Traits::ld_w(16) % 32 == 24 && Traits::ld_w(32) % 32 == 8 &&
                  Traits::ld_w(64) % 32 == 8,
              "conflict-free W fragments");

// The gather's geometry: one sample and conv group's input, and the conv settings.
struct Geometry {
  int d, h, w;            // input extent
  int oh, ow, positions;  // output rows and columns, and OD * OH * OW
  int sd, sh, sw;         // stride
  int pd, ph, pw;         // zero padding
  int dd, dh, dw;         // dilation
  int kh, kw, taps;       // kernel extent along H and W, and KD * KH * KW
  int k_total;            // Cin/G * taps
  bool padded;            // any zero padding: the gather tests bounds
};

// Column k of A: its offset from the conv group's first input element and its displacement per
// axis from a row's first tap. Columns past k_total (K padded to whole slices, zero weights) read
// nothing where the layer is padded (dz far out of range), and column 0's element elsewhere (in
// bounds, and finite wherever the row itself is).
struct Column {
  int offset, dz, dy, dx;
};

// Output position m as the input coordinates of its first tap and their offset within an input
// channel (negative where the first tap lies in the padding).
struct Row {
  int offset, z, y, x;
};

constexpr int kFarOutside = 1 << 24;

FUSED3D_HOST_DEVICE Column column_of(const Geometry& g, int k) {
  if (k >= g.k_total) return g.padded ? Column{0, kFarOutside, 0, 0} : Column{0, 0, 0, 0};
  const int ci = k / g.taps, tap = k - ci * g.taps, plane = g.kh * g.kw;
  const int kd = tap / plane, kh = (tap - kd * plane) / g.kw, kw = tap - kd * plane - kh * g.kw;
  const int dz = kd * g.dd, dy = kh * g.dh, dx = kw * g.dw;
  return {((ci * g.d + dz) * g.h + dy) * g.w + dx, dz, dy, dx};
}

FUSED3D_HOST_DEVICE Row row_of(const Geometry& g, int m) {
  const int plane = g.oh * g.ow;
  const int od = m / plane, oh = (m - od * plane) / g.ow, ow = m - od * plane - oh * g.ow;
  const int z = od * g.sd - g.pd, y = oh * g.sh - g.ph, x = ow * g.sw - g.pw;
  return {(z * g.h + y) * g.w + x, z, y, x};
}

// Whether A[m, k] reads the input (else it is zero padding), for m's Row and k's Column. Without
// padding every column of every output position is inside.
FUSED3D_HOST_DEVICE bool inside(const Geometry& g, const Row& r, const Column& c) {
  return static_cast<unsigned>(r.z + c.dz) < static_cast<unsigned>(g.d) &&
         static_cast<unsigned>(r.y + c.dy) < static_cast<unsigned>(g.h) &&
         static_cast<unsigned>(r.x + c.dx) < static_cast<unsigned>(g.w);
}

Geometry geometry(const at::Tensor& x, const FusedLayer& layer);

// The weights as W per (conv group, block of kBlockN channels), packed once per model.
struct IgemmWeights {
  at::Tensor hi;    // (G * blocks, K padded to kBlockK, 8 * n_tiles) float32, TF32-rounded; zero padding
  at::Tensor lo;    // the same for weight - hi (accurate mode on float32), else undefined
  at::Tensor half;  // float16 / bfloat16 models: (G * blocks, K slices, 8 * n_tiles, kBlockK) in their dtype
  at::Tensor bias;  // (G * blocks, 8 * n_tiles) float32, zeros where the conv has no bias
  int n_tiles = 0;  // n8 tiles per block: 1, 2, 4 or 8
  int blocks = 0;   // channel blocks per conv group
};

// Whether the products split into hi and lo parts: float32 in the accurate mode. float16 and
// bfloat16 inputs go to the tensor cores as they are (m16n8k16 in their type, float accumulators):
// their products are exact in either mode.
bool splits(at::ScalarType dtype, Precision precision);

IgemmWeights pack_weights(const FusedLayer& layer, Precision precision);

// What the box kernel (conv3d_igemm_box.h) shares with this one: the channel blocking, the steps
// per tile, and the packing of W once its columns are in the kernel's order.
// n8 tiles per block of output channels, for a conv group of that many: 1, 2, 4 or kMaxNTiles.
int n_tiles_for(int64_t cout_per_group);
// Steps per tile for a sample of `positions` output positions (steps of kBlockM): up to kMaxSteps
// where the grid has blocks to spare, fewer where the batch would leave SMs idle.
int steps_per_tile(long long batch, int positions, int channel_blocks, int sms);
// W as (G, Cout/G, K) float32, K a whole number of kBlockK slices in the kernel's column order ->
// the packed weights: channels padded to whole blocks, TF32 hi (and lo where splits()), the bias.
IgemmWeights pack_columns(const FusedLayer& layer, const at::Tensor& w, Precision precision);

// Whether the kernel takes x's device (its code has mma.sync's TF32 form: sm_80 on).
bool can_run(const at::Tensor& x);
// Partial-moment tiles per sample (each of up to kMaxSteps steps of kBlockM positions).
int tiles(const at::Tensor& x, const FusedLayer& layer);
// partials: (B, tiles, Cout) Moments<float> viewed as (B, tiles, Cout, 3) floats; x contiguous.
void launch(const at::Tensor& x, const FusedLayer& layer, const IgemmWeights& weights, int tiles, at::Tensor& partials,
            cudaStream_t stream);

#if defined(__CUDACC__)
// ---- device code both implicit-GEMM kernels use

// The operands of A, per element. ptxas expands cvt.rna.tf32.f32 to five instructions on sm_90 (a
// compare and select for NaN besides the rounding), as many as the gather spends on the element.
//   tf32 mode: v as the MMA reads it rounded to TF32 as cvt.rna does it (nearest, ties away from
//     zero) in one integer operation: add half a TF32 ulp to the magnitude bits. The tensor core
//     reads an operand's top 19 bits and ignores the 13 that TF32 drops, so clearing them (a second
//     operation) changes no product. Infinities stay, a carry out of the largest finite values
//     gives infinity.
//   split: hi = v with those bits cleared (one operation) and lo = v - hi, exact; the MMA reads
//     lo's top 19 bits, so the product keeps v to 2^-21 of itself (rounding both parts keeps 2^-22,
//     at three more operations per element), against float32's 2^-24 and the mode's 1e-5 bound.
__device__ __forceinline__ float tf32_operand(float v) { return __uint_as_float(__float_as_uint(v) + 0x1000u); }
__device__ __forceinline__ float truncate_to_tf32(float v) { return __uint_as_float(__float_as_uint(v) & 0xFFFFE000u); }

__device__ __forceinline__ Moments<float> shuffle_xor(const Moments<float>& m, int offset) {
  return {__shfl_xor_sync(0xffffffffu, m.count, offset), __shfl_xor_sync(0xffffffffu, m.mean, offset),
          __shfl_xor_sync(0xffffffffu, m.m2, offset)};
}
#endif

}  // namespace fused3d::igemm
