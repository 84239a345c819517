// Tensor-core fast path: conv3d (kernel 4x4x4, 16 output channels, any Cin) -> bias -> hardswish
// -> per-(sample, channel) moments, as an implicit GEMM on mma.sync. The GroupNorm-mean epilogue
// is the general path's (conv3d_hardswish_groupnorm_mean.cu, moments.h).
//
// GEMM view: M = output positions (16 consecutive columns of one output row per MMA), N = Cout
// (two n8 halves), K = Cin*64, taken 16 at a time for fp16 m16n8k16 as (ci; kd pair 2kp, 2kp+1;
// kh pair 2q, 2q+1; kw 0..3). Lane (g = lane/4, t = lane%4) then holds, for output row oh,
//   a0 = {x[kd 2kp  ][row oh+2q][col g+t],   x[kd 2kp  ][row oh+2q+1][col g+t]}
//   a1 = the same at col g+8+t;   a2, a3 = the same in plane kd 2kp+1
// (planes ci, od+kd; columns relative to the tile's first). Every register is one input row's
// value at a fixed column offset, so a warp computing kRows output rows reads kRows+3 input rows
// (two floats each) per (ci, kd) and reuses each for all four kh; and the fragment of (row oh,
// q = 1) is the fragment of (row oh+2, q = 0), so each is packed once and feeds two MMAs.
//
// Precision. Rounding x is unbiased and averages out over the spatial mean; rounding the weights
// is systematic (every output uses the same rounded weights) and does not (DESIGN-NOTES). So:
//   accurate: x in fp16, weights split w = hi + lo (both fp16, two MMAs): ~2e-6 relative L2
//   tf32:     x and weights in fp16 (one MMA): fp16 and TF32 both keep 11 significant bits
// fp16 runs at twice TF32's tensor rate. Its range is the catch: the weights are scaled per output
// channel by a power of two (exact) into [1, 2) and the accumulator scaled back; for x, each block
// tracks max|x| over the values it reads, and if any exceeds fp16's range (65504) or all are below
// 2^-10 (where fp16 subnormals lose relative precision), the block recomputes its tile with TF32
// operands (x rounded by cvt.rna, weights split hi + lo in the accurate mode). NaN stays NaN in
// either format.
//
// Data movement: a work item is one (sample, od, band of row tiles); its input slab (4 planes x
// the band's input rows x the full width) is staged per input channel into shared memory with
// cp.async, two stages deep. The grid is persistent and each block's stages form one stream of
// (item, channel) steps, so the next slab is in flight while the current one is computed, across
// item boundaries too. Warp w computes one warp tile (kRows x 16 outputs); edge tiles shift back
// to stay inside the input and mask the duplicate rows/columns out of the statistics. Each item
// writes its own partial moments and merges run in a fixed order: deterministic whatever the
// grid size.
//
// Limits (else the general kernel runs): kernel 4x4x4, Cout 16, stride 1, no padding, dilation 1,
// conv groups 1, float32, OH >= kRows, 16 <= OW <= 16*kWarps; in the accurate mode also at least
// kAccurateMinPositions output positions per sample (see there).
#include "conv3d_k4_tensorcore.h"
#include "moments.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <limits>
#include <map>
#include <mutex>

namespace fused3d {
// Named rather than anonymous: the Python extension (tools/fused3d_torch.py) compiles both .cu
// files as one translation unit.
namespace tensorcore_kernel {

constexpr int kKernel = 4;   // kernel extent along each axis (specialized)
constexpr int kCout = 16;    // output channels (two mma n8 halves)
constexpr int kRows = 10;    // output rows per warp tile: 29 = 3 tiles with 1 row of overlap
constexpr int kCols = 16;    // output columns per warp tile (mma M)
constexpr int kWarps = 6;    // warp tiles per block: the standard layer's 3 row x 2 column tiles
constexpr int kThreads = kWarps * 32;
constexpr int kStages = 2;   // shared-memory stages (input channels in flight)
constexpr int kInputRows = kRows + kKernel - 1;
constexpr float kHalfMax = 65504.f;             // largest finite fp16
constexpr float kHalfSmallest = 1.f / 1024.f;   // below, fp16 keeps too few bits: use TF32
static_assert(kKernel == 4, "the fragment mappings take kw = t (0..3) and kh in pairs");
static_assert(kCout == 16, "two n8 halves");
static_assert(kRows >= 1 && kRows <= 16, "accumulators: 8 registers per row");

enum class Operands { kHalfSplit, kHalf, kTf32Split, kTf32 };
__host__ __device__ constexpr bool is_half(Operands o) { return o == Operands::kHalfSplit || o == Operands::kHalf; }
__host__ __device__ constexpr int weight_parts(Operands o) { return (o == Operands::kHalfSplit || o == Operands::kTf32Split) ? 2 : 1; }

struct TcParams {
  const float* x;
  long long sample_stride;  // Cin*D*H*W
  int cin, d, h, w;
  int oh, ow;
  int items;  // B * tiles (< 2^31, checked)
  int row_tiles, col_tiles, band_row_tiles, bands, tiles;  // tiles = items per sample = OD * bands
  int stage_floats;                                       // one shared-memory stage
  bool copy16;                                            // 16-byte cp.async (W % 4 == 0, aligned x)
  const uint2* half_w;       // (Cin, 2 kp, 2 q, 2 nh, parts, 32 lanes) of {b0, b1} half2, scaled weights
  const float2* tf32_w;      // (Cin, 4 kd, 2 p, 2 nh, parts, 32 lanes) of {b0, b1}
  const float* half_bias;    // bias * channel scale (16)
  const float* half_unscale; // 1 / channel scale (16)
  const float* bias;         // (16)
  Moments<float>* partials;  // (B, tiles, 16)
};

// Where a warp tile sits: rows [oh0, oh0 + kRows) of the output, columns [ow0, ow0 + 16).
struct WarpTile {
  int slab_row;        // oh0 relative to the block's first staged input row
  int ow0;
  int duplicate_rows;  // leading rows owned by the previous row tile
  int duplicate_cols;  // leading columns owned by the previous column tile
};

__device__ __forceinline__ int tile_origin(int tile, int extent, int size) { return min(tile * size, extent - size); }

// ------------------------------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

__device__ __forceinline__ uint32_t half_pair(float low, float high) {
  const __half2 h = __floats2half2_rn(low, high);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Not volatile: the compiler may interleave independent MMAs (a dependent pair back to back stalls
// on the tensor pipe's latency; ncu counted 2.6 'wait' stall cycles per issued instruction).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const float2& b) {
  asm(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(__float_as_uint(b.x)), "r"(__float_as_uint(b.y)));
}

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint32_t (&a)[4], const uint2& b) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
}

__device__ __forceinline__ void cp_async16(float* smem, const float* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }


// acc += this channel's contribution, reading x from the staged planes.
template <Operands kOps>
__device__ __forceinline__ void accumulate_channel(const TcParams& p, const float* stage, int slab_rows, int ci,
                                                   const WarpTile& tile, float (&acc)[kRows][2][4]) {
  constexpr int kParts = weight_parts(kOps);
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const float* base = stage + tile.slab_row * p.w + tile.ow0 + g + t;
  const int plane = slab_rows * p.w;
  if constexpr (is_half(kOps)) {
    // m16n8k16 slices: (kd pair kp) x (kh pair q) x kw, k = 2t + s + 8*kk for kd = 2kp + kk,
    // kh = 2q + s, kw = t. The quad {rows j, j+1 of plane kd, cols g+t | g+8+t; same of kd+1} is
    // the A fragment of output row j with q = 0 and of output row j - 2 with q = 1: each quad is
    // packed once into its own registers and feeds both (no register moves between MMAs).
#pragma unroll 1
    for (int kp = 0; kp < kKernel / 2; ++kp) {
      const float* rows0 = base + 2 * kp * plane;
      const float* rows1 = rows0 + plane;
      const uint2* w = p.half_w + (((ci * 2 + kp) * 2 * 2) * kParts) * 32 + lane;
      uint2 b[2][2][kParts];  // [q][nh][part]
#pragma unroll
      for (int q = 0; q < 2; ++q)
#pragma unroll
        for (int nh = 0; nh < 2; ++nh)
#pragma unroll
          for (int part = 0; part < kParts; ++part) b[q][nh][part] = __ldg(w + ((q * 2 + nh) * kParts + part) * 32);
      float lo0[kInputRows], hi0[kInputRows], lo1[kInputRows], hi1[kInputRows];
#pragma unroll
      for (int j = 0; j < kInputRows; ++j) {
        lo0[j] = rows0[j * p.w];
        hi0[j] = rows0[j * p.w + 8];
        lo1[j] = rows1[j * p.w];
        hi1[j] = rows1[j * p.w + 8];
      }
#pragma unroll
      for (int j = 0; j + 1 < kInputRows; ++j) {
        const uint32_t a[4] = {half_pair(lo0[j], lo0[j + 1]), half_pair(hi0[j], hi0[j + 1]),
                               half_pair(lo1[j], lo1[j + 1]), half_pair(hi1[j], hi1[j + 1])};
        // Four independent accumulators between two MMAs on the same one.
#pragma unroll
        for (int part = kParts - 1; part >= 0; --part)
#pragma unroll
          for (int nh = 0; nh < 2; ++nh) {
            if (j < kRows) mma_f16(acc[j][nh], a, b[0][nh][part]);
            if (j >= 2) mma_f16(acc[j - 2][nh], a, b[1][nh][part]);
          }
      }
    }
  } else {
    // TF32 m16n8k8 slices: (kd; kh pair q) x kw, k = t + 4s for kh = 2q + s: a0/a1 from input row
    // oh+2q, a2/a3 from oh+2q+1 (cols g+t | g+8+t); b0/b1 = weights at kh 2q / 2q+1, kw t.
#pragma unroll 1
    for (int kd = 0; kd < kKernel; ++kd) {
      const float* rows = base + kd * plane;
      uint32_t lo[kInputRows], hi[kInputRows];  // columns g+t and g+8+t of each input row
#pragma unroll
      for (int j = 0; j < kInputRows; ++j) {
        lo[j] = to_tf32(rows[j * p.w]);
        hi[j] = to_tf32(rows[j * p.w + 8]);
      }
      const float2* w = p.tf32_w + ((ci * kKernel + kd) * 2 * 2 * kParts) * 32 + lane;
      float2 b[2][2][kParts];  // [q][nh][part]
#pragma unroll
      for (int q = 0; q < 2; ++q)
#pragma unroll
        for (int nh = 0; nh < 2; ++nh)
#pragma unroll
          for (int part = 0; part < kParts; ++part) b[q][nh][part] = __ldg(w + ((q * 2 + nh) * kParts + part) * 32);
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const uint32_t a[4] = {lo[r + 2 * q], hi[r + 2 * q], lo[r + 2 * q + 1], hi[r + 2 * q + 1]};
#pragma unroll
          for (int part = kParts - 1; part >= 0; --part)
#pragma unroll
            for (int nh = 0; nh < 2; ++nh) mma_tf32(acc[r][nh], a, b[q][nh][part]);
        }
    }
  }
}

// What one work item (sample n, output depth od, band of row tiles) covers, and this warp's tile.
struct Item {
  const float* sample;
  int n;
  int tile_index;  // item within the sample: od * bands + band
  int od;
  int slab_row0, slab_rows;  // the input rows staged
  bool active;               // this warp has a tile in the band
  WarpTile tile;
};

// 32-bit index math (the host checks that B * tiles < 2^31): a 64-bit division is a ~70-instruction
// subroutine, and this runs once per item.
__device__ __forceinline__ Item describe_item(const TcParams& p, int item) {
  Item it{};
  it.n = item / p.tiles;
  it.tile_index = item - it.n * p.tiles;
  it.sample = p.x + static_cast<long long>(it.n) * p.sample_stride;
  it.od = it.tile_index / p.bands;
  const int band = it.tile_index - it.od * p.bands;
  const int first_row_tile = band * p.band_row_tiles;
  const int band_row_tiles = min(p.band_row_tiles, p.row_tiles - first_row_tile);
  it.slab_row0 = tile_origin(first_row_tile, p.oh, kRows);
  it.slab_rows = tile_origin(first_row_tile + band_row_tiles - 1, p.oh, kRows) + kInputRows - it.slab_row0;
  const int warp = threadIdx.x / 32;
  it.active = warp < band_row_tiles * p.col_tiles;
  if (it.active) {
    const int row_tile = first_row_tile + warp / p.col_tiles;
    const int col_tile = warp - (warp / p.col_tiles) * p.col_tiles;
    const int oh0 = tile_origin(row_tile, p.oh, kRows);
    it.tile.ow0 = tile_origin(col_tile, p.ow, kCols);
    it.tile.slab_row = oh0 - it.slab_row0;
    it.tile.duplicate_rows = row_tile * kRows - oh0;
    it.tile.duplicate_cols = col_tile * kCols - it.tile.ow0;
  }
  return it;
}

// Stage input channel ci of an item: 4 planes (od .. od+3) x slab_rows rows x W, each plane one
// contiguous run in global memory and in the stage.
__device__ __forceinline__ void stage_channel(const TcParams& p, float* stage, const Item& it, int ci) {
  const int run = it.slab_rows * p.w;
  const long long plane = static_cast<long long>(p.h) * p.w;
  const float* src = it.sample + (static_cast<long long>(ci * p.d + it.od) * p.h + it.slab_row0) * p.w;
  if (p.copy16) {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd)
      for (int i = threadIdx.x * 4; i < run; i += kThreads * 4) cp_async16(stage + kd * run + i, src + kd * plane + i);
  } else {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd)
      for (int i = threadIdx.x; i < run; i += kThreads) cp_async4(stage + kd * run + i, src + kd * plane + i);
  }
}

// max |x| over what this thread copied in stage_channel (the same indices): after its own
// cp.async completes, each thread sees that data without a barrier. Every staged value is read
// once here, instead of once per fragment it lands in.
__device__ __forceinline__ float staged_abs_max(const TcParams& p, const float* stage, const Item& it) {
  const int run = it.slab_rows * p.w;
  float m = 0.f;
  if (p.copy16) {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd)
      for (int i = threadIdx.x * 4; i < run; i += kThreads * 4) {
        const float4 q = *reinterpret_cast<const float4*>(stage + kd * run + i);
        m = fmaxf(m, fmaxf(fmaxf(fabsf(q.x), fabsf(q.y)), fmaxf(fabsf(q.z), fabsf(q.w))));
      }
  } else {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd)
      for (int i = threadIdx.x; i < run; i += kThreads) m = fmaxf(m, fabsf(stage[kd * run + i]));
  }
  return m;
}

template <Operands kOps>
__device__ __forceinline__ void init_accumulators(const TcParams& p, float (&acc)[kRows][2][4]) {
  const int t = threadIdx.x % 4;
  const float* bias = is_half(kOps) ? p.half_bias : p.bias;
#pragma unroll
  for (int nh = 0; nh < 2; ++nh) {
    const float b0 = bias[nh * 8 + 2 * t], b1 = bias[nh * 8 + 2 * t + 1];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      acc[r][nh][0] = b0;
      acc[r][nh][1] = b1;
      acc[r][nh][2] = b0;
      acc[r][nh][3] = b1;
    }
  }
}

// Moments of the warp tile's outputs (hardswish applied) for channel nh*8 + 2t + e, returned in
// lanes t (g = 0) as [nh][e]. All lanes of a channel shift by one pivot, a value from the tile
// itself (lane t's last row), so sum((h - pivot)^2) does not cancel the way a plain sum of
// squares would when |mean| >> std, and lanes merge by plain addition.
__device__ __forceinline__ void warp_tile_moments(const TcParams& p, const Item& it, bool half_operands,
                                                  const float (&acc)[kRows][2][4], Moments<float> (&moments)[2][2]) {
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const float keep_lo = g >= it.tile.duplicate_cols ? 1.f : 0.f;      // column ow0 + g
  const float keep_hi = g + 8 >= it.tile.duplicate_cols ? 1.f : 0.f;  // column ow0 + g + 8
  float unscale[2][2], pivot[2][2], sum[2][2] = {}, squares[2][2] = {};
#pragma unroll
  for (int nh = 0; nh < 2; ++nh)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      unscale[nh][e] = half_operands ? p.half_unscale[nh * 8 + 2 * t + e] : 1.f;
      pivot[nh][e] = __shfl_sync(0xffffffffu, hardswish(acc[kRows - 1][nh][2 + e] * unscale[nh][e]), t);
    }
  // Per element: unscale, gate, (h - pivot) in one FMA, mask, two accumulations. This runs for
  // every output (179M at B=1024), as often as the tensor work, so it is kept branch-free (ncu:
  // a per-row branch here cost ~150 of ~1150 instructions per warp tile).
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const bool row_kept = r >= it.tile.duplicate_rows;  // leading rows belong to the previous tile
    const float mask_lo = row_kept ? keep_lo : 0.f;
    const float mask_hi = row_kept ? keep_hi : 0.f;
#pragma unroll
    for (int nh = 0; nh < 2; ++nh)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float y_lo = acc[r][nh][e] * unscale[nh][e];
        const float y_hi = acc[r][nh][2 + e] * unscale[nh][e];
        const float d_lo = fmaf(y_lo, hardswish_gate(y_lo), -pivot[nh][e]) * mask_lo;
        const float d_hi = fmaf(y_hi, hardswish_gate(y_hi), -pivot[nh][e]) * mask_hi;
        sum[nh][e] += d_lo + d_hi;
        squares[nh][e] = fmaf(d_lo, d_lo, fmaf(d_hi, d_hi, squares[nh][e]));
      }
  }
  const float own_count = (kRows - it.tile.duplicate_rows) * (keep_lo + keep_hi);
#pragma unroll
  for (int nh = 0; nh < 2; ++nh)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float count = own_count, s = sum[nh][e], q = squares[nh][e];
      // Lanes with the same t hold the same channel: add over g (lanes t, t+4, ..., t+28).
#pragma unroll
      for (int offset = 16; offset >= 4; offset /= 2) {
        s += __shfl_down_sync(0xffffffffu, s, offset);
        q += __shfl_down_sync(0xffffffffu, q, offset);
        count += __shfl_down_sync(0xffffffffu, count, offset);
      }
      // count > 0: a warp tile always owns at least one row and one column.
      moments[nh][e] = {count, pivot[nh][e] + s / count, fmaxf(q - s * (s / count), 0.f)};
    }
}

// A persistent grid: block b takes items b, b + gridDim.x, ... Its shared-memory stages form one
// stream of (item, channel) steps, so the next step's slab (the next item's first channel, at an
// item's end) is in flight while the current one is computed.
template <Operands kFast, Operands kFallback>
__global__ void __launch_bounds__(kThreads, 2) conv_k4_tensorcore_moments_kernel(TcParams p) {
  extern __shared__ float4 smem_vec[];
  float* smem = reinterpret_cast<float*>(smem_vec);
  __shared__ Moments<float> warp_moments[kWarps][kCout];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  int item = blockIdx.x;
  if (item >= p.items) return;

  Item it = describe_item(p, item);
  int step = 0;  // (item, channel) steps so far; step s uses stage s % kStages
  stage_channel(p, smem, it, 0);
  cp_async_commit();
  while (true) {
    const int next_index = item + gridDim.x;
    const bool has_next = next_index < p.items;
    Item next{};
    float acc[kRows][2][4];
    init_accumulators<kFast>(p, acc);
    float x_max = 0.f;
    for (int ci = 0; ci < p.cin; ++ci, ++step) {
      float* following = smem + ((step + 1) % kStages) * p.stage_floats;
      // The stage being overwritten was last read in step - 1, which ended at a barrier.
      if (ci + 1 < p.cin) {
        stage_channel(p, following, it, ci + 1);
      } else if (has_next) {
        next = describe_item(p, next_index);
        stage_channel(p, following, next, 0);
      }
      if (ci + 1 < p.cin || has_next) {
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      const float* current = smem + (step % kStages) * p.stage_floats;
      if constexpr (is_half(kFast)) x_max = fmaxf(x_max, staged_abs_max(p, current, it));
      __syncthreads();
      if (it.active) accumulate_channel<kFast>(p, current, it.slab_rows, ci, it.tile, acc);
      __syncthreads();
    }

    bool half_operands = is_half(kFast);
    if constexpr (is_half(kFast)) {
      const bool too_large = __syncthreads_or(!(x_max <= kHalfMax));
      const bool large_enough = __syncthreads_or(x_max >= kHalfSmallest);
      if (too_large || !large_enough) {
        // Recompute this item with TF32 operands in the stage the prefetch does not occupy.
        float* stage = smem + ((step + 1) % kStages) * p.stage_floats;
        init_accumulators<kFallback>(p, acc);
        for (int ci = 0; ci < p.cin; ++ci) {
          stage_channel(p, stage, it, ci);
          cp_async_commit();
          cp_async_wait<0>();
          __syncthreads();
          if (it.active) accumulate_channel<kFallback>(p, stage, it.slab_rows, ci, it.tile, acc);
          __syncthreads();
        }
        half_operands = false;
      }
    }

    Moments<float> moments[2][2] = {};
    if (it.active) warp_tile_moments(p, it, half_operands, acc, moments);
    if (g == 0) {
#pragma unroll
      for (int nh = 0; nh < 2; ++nh)
#pragma unroll
        for (int e = 0; e < 2; ++e) warp_moments[warp][nh * 8 + 2 * t + e] = moments[nh][e];
    }
    __syncthreads();
    if (threadIdx.x < kCout) {
      Moments<float> m = warp_moments[0][threadIdx.x];
      for (int wi = 1; wi < kWarps; ++wi) m = merge_moments(m, warp_moments[wi][threadIdx.x]);
      p.partials[(static_cast<long long>(it.n) * p.tiles + it.tile_index) * kCout + threadIdx.x] = m;
    }
    // warp_moments is written again only after the next item's first barrier.
    if (!has_next) break;
    item = next_index;
    it = next;
  }
}

// TF32 rounding as cvt.rna does it (nearest, ties away from zero) on float32 bit patterns.
at::Tensor round_to_tf32(const at::Tensor& w) {
  return w.contiguous().view(at::kInt).add(0x1000).bitwise_and(static_cast<int32_t>(0xFFFFE000u)).view(at::kFloat);
}

struct Geometry {
  int oh, ow, row_tiles, col_tiles, band_row_tiles, bands;
};

Geometry geometry(const at::Tensor& x) {
  Geometry g{};
  g.oh = static_cast<int>(x.size(3)) - kKernel + 1;
  g.ow = static_cast<int>(x.size(4)) - kKernel + 1;
  g.row_tiles = (g.oh + kRows - 1) / kRows;
  g.col_tiles = (g.ow + kCols - 1) / kCols;
  g.band_row_tiles = std::max(1, std::min(g.row_tiles, kWarps / std::max(1, g.col_tiles)));
  g.bands = (g.row_tiles + g.band_row_tiles - 1) / g.band_row_tiles;
  return g;
}

// One stage: 4 planes x the widest band's input rows x W floats.
int stage_floats(const at::Tensor& x) {
  const Geometry g = geometry(x);
  const int slab_rows = std::min(g.band_row_tiles * kRows, g.oh) + kKernel - 1;
  return kKernel * slab_rows * static_cast<int>(x.size(4));
}

size_t shared_bytes(const at::Tensor& x) { return sizeof(float) * kStages * stage_floats(x); }

constexpr size_t kMaxSharedBytes = 96 * 1024;  // two blocks per SM with room to spare
// The accurate mode's error is x's fp16 rounding, which is unbiased and averages out over the S
// output positions of a channel's mean: it scales as 1/sqrt(S). Measured 2.2e-6 (U[0,1) inputs;
// DESIGN-NOTES: 6.2e-6 for N(0,1)) at the standard S = 10,933; the randomized sweep saw 1.4e-5 at
// S = 336. Below 8192 positions (predicted <= 7.2e-6 for N(0,1)) the float32 kernel keeps the
// accurate mode's 1e-5 promise instead.
constexpr int64_t kAccurateMinPositions = 8192;

}  // namespace tensorcore_kernel


// ------------------------------------------------------------------------------------------------
// Launchers

bool tensorcore_k4_can_run(const FusedLayer& l, const at::Tensor& x, Precision precision) {
  using namespace tensorcore_kernel;  // this file's internals
  const auto k = l.kernel();
  if (!(k[0] == kKernel && k[1] == kKernel && k[2] == kKernel && l.out_channels() == kCout &&
        is_plain_float32_conv(l) && unsupported_reason(l).empty() && x.dim() == 5 &&
        x.scalar_type() == at::kFloat))
    return false;
  const Geometry g = geometry(x);
  const int64_t positions = (x.size(2) - kKernel + 1) * static_cast<int64_t>(g.oh) * g.ow;
  if (precision == Precision::kAccurate && positions < kAccurateMinPositions) return false;
  return g.oh >= kRows && g.ow >= kCols && g.col_tiles <= kWarps && shared_bytes(x) <= kMaxSharedBytes;
}

int tensorcore_k4_tiles(const at::Tensor& x) {
  using namespace tensorcore_kernel;  // this file's internals
  return static_cast<int>(x.size(2) - kKernel + 1) * geometry(x).bands;
}

TensorcoreWeights pack_tensorcore_k4_weights(const FusedLayer& l, Precision precision) {
  using namespace tensorcore_kernel;  // this file's internals
  const int64_t cin = l.in_channels();
  const at::Tensor w = l.weight.contiguous();
  const at::Tensor bias = l.bias.defined() ? l.bias.contiguous() : at::zeros({kCout}, w.options());
  TensorcoreWeights packed;
  packed.parts = precision == Precision::kAccurate ? 2 : 1;
  const auto split = [&](const at::Tensor& v, auto round) {
    const at::Tensor hi = round(v);
    if (packed.parts == 1) return hi.unsqueeze(0);
    return at::stack({hi, round(v - hi.to(at::kFloat))}, 0);  // (part, ...)
  };

  // fp16: each output channel scaled by 2^e so that max|w| is in [1, 2), exact in either direction.
  const at::Tensor max_abs = w.abs().amax({1, 2, 3, 4});
  const at::Tensor scale = at::where(max_abs > 0, at::exp2(-at::floor(at::log2(max_abs))), at::ones_like(max_abs));
  // (co = nh*8 + g, ci, kd = 2kp + kk, kh = 2q + s, kw = t) -> (ci, kp, q, nh, lane = 4g + t, (kk, s)):
  // b0 = {kk 0: s 0, s 1}, b1 = {kk 1: s 0, s 1}
  const at::Tensor scaled = (w * scale.view({kCout, 1, 1, 1, 1}))
                                .view({2, 8, cin, 2, 2, 2, 2, kKernel})
                                .permute({2, 3, 5, 0, 1, 7, 4, 6})
                                .reshape({cin, 2, 2, 2, 32, 4});
  const at::Tensor half_parts = split(scaled, [](const at::Tensor& v) { return v.to(at::kHalf); });
  packed.half_fragments = half_parts.permute({1, 2, 3, 4, 0, 5, 6}).contiguous();  // (ci, kp, q, nh, part, lane, 4)
  packed.half_bias = (bias * scale).contiguous();
  packed.half_unscale = scale.reciprocal().contiguous();

  // TF32 fallback: (co, ci, kd, kh = 2q + s, kw = t) -> (ci, kd, q, nh, lane, s)
  const at::Tensor grouped = w.view({2, 8, cin, kKernel, 2, 2, kKernel})
                                 .permute({2, 3, 4, 0, 1, 6, 5})
                                 .reshape({cin, kKernel, 2, 2, 32, 2});
  const at::Tensor tf32_parts = split(grouped, round_to_tf32);
  packed.tf32_fragments = tf32_parts.permute({1, 2, 3, 4, 0, 5, 6}).contiguous();  // (ci, kd, q, nh, part, lane, 2)
  packed.bias = bias;
  return packed;
}

void launch_tensorcore_k4_moments(const at::Tensor& x, const TensorcoreWeights& packed, at::Tensor& partials,
                                  int tiles, cudaStream_t stream) {
  using namespace tensorcore_kernel;  // this file's internals
  const Geometry g = geometry(x);
  TcParams p{};
  p.x = x.data_ptr<float>();
  p.sample_stride = x.stride(0);
  p.cin = static_cast<int>(x.size(1));
  p.d = static_cast<int>(x.size(2));
  p.h = static_cast<int>(x.size(3));
  p.w = static_cast<int>(x.size(4));
  p.oh = g.oh;
  p.ow = g.ow;
  p.row_tiles = g.row_tiles;
  p.col_tiles = g.col_tiles;
  p.band_row_tiles = g.band_row_tiles;
  p.bands = g.bands;
  p.tiles = tiles;
  TORCH_CHECK(x.size(0) * static_cast<long long>(tiles) < std::numeric_limits<int>::max(), "fused3d: batch ",
              x.size(0), " has more work items than 32-bit indices reach");
  p.items = static_cast<int>(x.size(0) * tiles);
  p.stage_floats = stage_floats(x);
  p.copy16 = p.w % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  p.half_w = reinterpret_cast<const uint2*>(packed.half_fragments.data_ptr<at::Half>());
  p.tf32_w = reinterpret_cast<const float2*>(packed.tf32_fragments.data_ptr<float>());
  p.half_bias = packed.half_bias.data_ptr<float>();
  p.half_unscale = packed.half_unscale.data_ptr<float>();
  p.bias = packed.bias.data_ptr<float>();
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());

  const size_t smem = shared_bytes(x);
  const auto launch = [&](auto kernel) {
    // Persistent grid: as many blocks as fit on the GPU at once, or one per item if fewer. The
    // occupancy query and the shared-memory attribute are done once per kernel, device and size:
    // each costs about a microsecond, and B=1 runs in ~30. (Statics per kernel: this lambda's
    // operator() is instantiated once per kernel.)
    static std::mutex mutex;
    static std::map<std::pair<int, size_t>, int> blocks_per_sm;  // (device, shared bytes)
    int per_sm = 0;
    {
      std::lock_guard<std::mutex> lock(mutex);
      const std::pair<int, size_t> key{x.get_device(), smem};
      auto found = blocks_per_sm.find(key);
      if (found == blocks_per_sm.end()) {
        if (smem > 48 * 1024)
          C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
        found = blocks_per_sm.emplace(key, std::max(per_sm, 1)).first;
      }
      per_sm = found->second;
    }
    const long long resident = static_cast<long long>(per_sm) * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const long long blocks = std::min(static_cast<long long>(p.items), resident);
    kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (packed.parts == 2)
    launch(conv_k4_tensorcore_moments_kernel<Operands::kHalfSplit, Operands::kTf32Split>);
  else
    launch(conv_k4_tensorcore_moments_kernel<Operands::kHalf, Operands::kTf32>);
}

}  // namespace fused3d
