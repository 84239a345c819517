// Tensor-core fast path: conv3d (kernel 4x4x4, 16 output channels, any Cin) -> bias -> hardswish
// -> per-(sample, channel) moments, as an implicit GEMM on mma.sync. The GroupNorm-mean epilogue
// is the general path's (conv3d_hardswish_groupnorm_mean.cu, moments.h); at B = 1 this kernel's
// last block runs it (epilogue_in_last_block). At the standard plane size and large batches the
// planes kernel (wgmma, sm_90a; its own section below) computes the same moments instead.
//
// GEMM view, weights on the left: D[channel][position] += W[channel][k] * X[k][position], with
// M = the 16 output channels, N = 8 consecutive output columns of one output row, and K = Cin*64
// taken 16 at a time for fp16 m16n8k16 as (ci; kh; k = 8*pp + 2*kw + kdl for kd = 2*pp + kdl).
// Lane (g = lane/4, t = lane%4) then holds, for output row oh + j and kernel row kh,
//   b0 = {x[plane 0][row j+kh][col g+t], x[plane 1][same]},  b1 = the same of planes 2 and 3
// (planes ci, od+kd; rows and columns relative to the warp tile). So a B fragment depends only on
// the input row j+kh and the column: each of a warp tile's kRows+3 input rows is loaded once per
// channel (two 8-byte shared loads: columns g+t and g+8+t) and feeds the MMAs of up to four output
// rows, one per kh; the weights (A, 4 registers per kh) stay in registers for the channel.
//
// Shared memory. Each input channel's slab (4 planes x the band's input rows x W, fp32) is staged
// by bulk copies (TMA; cp.async where the runs are not 16-byte aligned), kStages deep; then the
// producer warps convert it once into that B layout, in one of kPacked converted stages: entry
// (row, col) = {half2(plane 0, plane 1), half2(plane 2, plane 3)}, 8 bytes, rows of W rounded up
// to 4 entries. The conversion reads every staged value once, which is also where the fp16 range
// check happens; the MMA loop does no conversion and no address arithmetic beyond one add per row.
// (Before this layout, ncu counted per warp tile ~790 instructions of fragment loads and
// conversions and ~390 of range check around 480 MMAs; RECORD.md, run 13.)
//
// Precision. Rounding x is unbiased and averages out over the spatial mean; rounding the weights
// is systematic (every output uses the same rounded weights) and does not (DESIGN-NOTES). So:
//   accurate: x in fp16, weights split w = hi + lo (both fp16, two MMAs): ~2e-6 relative L2
//   tf32:     x and weights in fp16 (one MMA): fp16 and TF32 both keep 11 significant bits
// fp16 runs at twice TF32's tensor rate. Its range is the catch: the weights are scaled per output
// channel by a power of two (exact) into [1, 2) and the accumulator scaled back; for x, the
// producers track max|x| over the values they convert for an item, and if any exceeds fp16's range
// (65504) or all are below 2^-10 (where fp16 subnormals lose relative precision), each MMA warp
// recomputes its tile with TF32 operands read from x in global memory (x rounded by cvt.rna,
// weights split hi + lo in the accurate mode). NaN stays NaN in either format.
//
// Work: a work item is one (sample, od, band of row tiles). The grid is persistent, one block per
// SM, and a block runs kGroups independent streams of (item, channel) steps. Warp specialization:
// in each group, kProducerWarps producer warps stage step s+2 and convert step s while the kWarps
// MMA warps compute step s-1; they hand converted stages over through mbarriers (`converted`,
// `drained`), never a block-wide barrier, so staging, conversion and MMAs overlap (before, all
// warps of a block did all three in turn between barriers: 0.507 -> 0.416 ms accurate, 0.389 ->
// 0.303 ms tf32; RECORD.md, runs 27 and 32). The producers need few registers and the MMA warps many:
// setmaxnreg moves them (sm_90a; kMmaRegisters, kProducerRegisters). Warp w of a group computes
// one warp tile (kRows output rows x 16 columns, two n8 MMAs); edge tiles shift back to stay inside
// the input and leave the duplicate rows/columns out of the statistics. Each item writes its own
// partial moments and merges run in a fixed order: deterministic whatever the grid size.
//
// Limits (else the general kernel runs): kernel 4x4x4, Cout 16, stride 1, no padding, dilation 1,
// conv groups 1, float32, OH >= kRows, 16 <= OW <= 16*kWarps; in the accurate mode also at least
// kAccurateMinPositions output positions per sample (see there).
#include "conv3d_k4_tensorcore.h"
#include "moments.h"
#include "wgmma.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace fused3d {
// Named rather than anonymous: the Python extension (tools/fused3d_torch.py) compiles both .cu
// files as one translation unit.
namespace tensorcore_kernel {

constexpr int kKernel = 4;   // kernel extent along each axis (specialized)
constexpr int kCout = 16;    // output channels: the mma M
constexpr int kRows = 10;    // output rows per warp tile: 29 = 3 tiles with 1 row of overlap
constexpr int kCols = 16;    // output columns per warp tile: two n8 MMAs
// A block runs kGroups independent item streams. Each group has kWarps MMA warps (one warp tile
// each: the standard layer's 3 row x 2 column tiles) and kProducerWarps producer warps that stage
// and convert the input channels the MMA warps read.
constexpr int kWarps = 6;
constexpr int kProducerWarps = 2;
constexpr int kGroups = 2;
constexpr int kMmaThreads = kWarps * 32;               // per group
constexpr int kProducerThreads = kProducerWarps * 32;  // per group
constexpr int kMmaWarpsPerBlock = kGroups * kWarps;
constexpr int kThreads = kGroups * (kMmaThreads + kProducerThreads);
// Pipeline depth: fp32 stages (the producers stage kStages - 1 steps ahead of the one they convert)
// and converted (fp16) stages. 3 and 3 against 2 and 2: tf32 1.5% faster, accurate the same; the
// depth was never what held the kernel back (2 to 4 stages, 2 or 3 converted: within 2%; RECORD.md,
// runs 42-44).
constexpr int kStages = 3;
constexpr int kPacked = 3;
// Items whose warp moments can be in shared memory at once: an item is merged at the end of the
// next one, and no warp gets more than kPacked items beyond that (see consume_items).
constexpr int kMomentSlots = kPacked + 2;
// Registers: one block per SM starts at 65536 / kThreads = 128 per thread; then the producer
// warpgroup gives registers back (setmaxnreg, sm_90a) and the MMA warpgroups take them. 152 / 56
// made the producers spill: tf32 0.327 ms against 0.300 at 144 / 80, accurate the same (run 27).
constexpr int kRegisterFile = 65536;
constexpr int kMmaRegisters = 144;
constexpr int kProducerRegisters = 80;
constexpr int kInputRows = kRows + kKernel - 1;
constexpr int kMaxWidth = 16 * kWarps + kKernel - 1;  // W at the widest OW the path takes
constexpr float kHalfMax = 65504.f;             // largest finite fp16
constexpr float kHalfSmallest = 1.f / 1024.f;   // below, fp16 keeps too few bits: use TF32
// Named barriers (0 is __syncthreads): one per group's producers, and one for all MMA warps of
// the block, used once at the end when the kernel runs the epilogue.
constexpr int kProducerBarrier = 1;
constexpr int kMmaBarrier = kProducerBarrier + kGroups;
// The kernel runs the epilogue itself up to this batch: a warp per (sample, group) of its 12 MMA
// warps, in one round up to 12 groups. Larger batches take the epilogue kernel, which spreads the
// groups over the GPU instead of running them in rounds on one block.
constexpr int64_t kRunsEpilogueMaxBatch = 1;
static_assert(kKernel == 4, "the fragment mappings take kw = t (0..3), kd in plane pairs, kh in pairs (TF32)");
static_assert(kCout == 16, "the weights are the m16 operand; the epilogue's groups have 1-16 channels");
static_assert(kCols == 16, "two n8 MMAs per output row");
static_assert(kRows >= 1 && kRows <= 16, "accumulators: 8 registers per row");
static_assert(kMmaWarpsPerBlock % 4 == 0 && (kGroups * kProducerWarps) % 4 == 0,
              "each role fills whole warpgroups: setmaxnreg applies per warpgroup");
static_assert(kThreads * 128 == kRegisterFile, "one block per SM at 128 registers per thread on entry");
static_assert(kMmaWarpsPerBlock * 32 * kMmaRegisters + kGroups * kProducerThreads * kProducerRegisters <= kRegisterFile,
              "the reallocated registers fit the register file");
static_assert(kMmaRegisters % 8 == 0 && kProducerRegisters % 8 == 0, "setmaxnreg counts are multiples of 8");
static_assert((kMaxWidth + 3) / 4 <= kProducerThreads, "the conversion gives each 4-column group at least one thread");
static_assert(kMmaBarrier < 16, "16 hardware barriers per block");

enum class Operands { kHalfSplit, kHalf, kTf32Split, kTf32 };
__host__ __device__ constexpr bool is_half(Operands o) { return o == Operands::kHalfSplit || o == Operands::kHalf; }
__host__ __device__ constexpr int weight_parts(Operands o) { return (o == Operands::kHalfSplit || o == Operands::kTf32Split) ? 2 : 1; }

struct TcParams {
  const float* x;
  long long sample_stride;  // Cin*D*H*W
  int cin, d, h, w;
  int oh, ow;
  int batch;
  int items;  // B * tiles (< 2^31, checked)
  int row_tiles, col_tiles, band_row_tiles, bands, ods, tiles;  // tiles = items per sample = OD * bands
  int stage_floats;                                       // one fp32 stage: 4 planes x slab rows x W
  int packed_row;                                         // entries per converted row: W rounded up to 4
  int packed_entries;                                     // one converted stage: slab rows x packed_row
  int pack_quads;                                         // packed_row / 4: 4-column groups per row
  int pack_row_step;                                      // kProducerThreads / pack_quads
  bool copy16;                                            // 16-byte cp.async (W % 4 == 0, aligned x)
  const uint4* half_w;       // (Cin, 4 kh, parts, 32 lanes) A fragments, fp16, scaled weights
  const float4* tf32_w;      // (Cin, 4 kd, 2 kh pairs, parts, 32 lanes) A fragments, TF32
  const uint4* wgmma_tiles;  // the planes kernel: (Cin, parts) B tiles of kPlanesTileBytes, copied to shared memory
  const float* half_bias;    // bias * channel scale (16)
  const float* half_unscale; // 1 / channel scale (16)
  const float* bias;         // (16)
  Moments<float>* partials;  // (B, tiles, 16)
  // B = 1 (tensorcore_k4_runs_epilogue): the block that finishes last runs the epilogue; the
  // counter of finished blocks is the stream's own (done_counter). Otherwise done_blocks is null.
  EpilogueParams epilogue;
  unsigned* done_blocks;
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
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float4& a, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a.x)), "r"(__float_as_uint(a.y)), "r"(__float_as_uint(a.z)), "r"(__float_as_uint(a.w)),
        "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_f16(float (&d)[4], const uint4& a, const uint2& b) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
}
// d = a * b + {c.x, c.x, c.y, c.y}: an accumulator's first MMA starts from the bias (channels g and
// g + 8) instead of 8 moves per output row and item (80 per thread and item; RECORD.md, run 21).
__device__ __forceinline__ void mma_f16_from(float (&d)[4], const uint4& a, const uint2& b, const float2& c) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%11,%11};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y), "f"(c.x), "f"(c.y));
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

// Bulk copies (sm_90): one thread moves a contiguous run global -> shared, and the bytes landing
// complete a phase of an mbarrier that the readers wait on.
__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// The mbarrier helpers take the barrier's shared-memory address (32 bits), computed once: the
// generic-to-shared conversion per use cost the MMA warps ~3% of their stall samples (run 29).
__device__ __forceinline__ void mbarrier_init(unsigned bar, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Barrier i of an array of them at shared address `barriers`.
__device__ __forceinline__ unsigned barrier_at(unsigned barriers, int i) { return barriers + i * sizeof(uint64_t); }
// Release: this thread's earlier shared-memory writes are seen by whoever waits for the phase.
__device__ __forceinline__ void mbarrier_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbarrier_expect_bytes(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_copy(void* smem, const void* gmem, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_address(smem)),
               "l"(gmem), "r"(bytes), "r"(bar)
               : "memory");
}
__device__ __forceinline__ void mbarrier_wait(unsigned bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// A barrier for `threads` threads of the block (a group's producers).
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Register reallocation between warpgroups (sm_90a; a plain sm_90 build keeps 128 per thread).
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

// acc += this channel's contribution, from the converted (fp16) stage. The B fragments of input row
// r of the warp tile (columns g+t and g+8+t) feed output rows j = r - kh, kh = 0..3, each with the
// weights of that kh (A, 4 registers per kh and weight part, loaded once per channel). So the loop
// runs over input rows, and each row's two fragments (two 8-byte shared loads) feed up to
// 4 x 2 x parts MMAs; only a row of fragments is live at a time (loading all 13 rows first, run 16,
// held 52 registers and gained nothing; RECORD.md, run 22).
// kFirst: the item's first channel, whose first MMA per accumulator (kh 0, the first part) starts
// from `bias` instead of the accumulator.
template <Operands kOps>
struct ChannelWeights {
  uint4 a[kKernel][weight_parts(kOps)];  // [kh][part]: A fragments
};

// Channel ci's A fragments. The MMA warps load them before they wait for the channel's converted
// stage: the load's latency passes during the wait instead of before the channel's first MMA.
template <Operands kOps>
__device__ __forceinline__ ChannelWeights<kOps> load_channel_weights(const TcParams& p, int ci) {
  constexpr int kParts = weight_parts(kOps);
  const uint4* w = p.half_w + ci * kKernel * kParts * 32 + threadIdx.x % 32;
  ChannelWeights<kOps> weights;
#pragma unroll
  for (int kh = 0; kh < kKernel; ++kh)
#pragma unroll
    for (int part = 0; part < kParts; ++part) weights.a[kh][part] = __ldg(w + (kh * kParts + part) * 32);
  return weights;
}

template <Operands kOps, bool kFirst>
__device__ __forceinline__ void accumulate_channel_half(const TcParams& p, const uint2* packed,
                                                        const ChannelWeights<kOps>& weights, const WarpTile& tile,
                                                        const float2& bias, float (&acc)[kRows][2][4]) {
  constexpr int kParts = weight_parts(kOps);
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const uint4 (&a)[kKernel][kParts] = weights.a;
  const uint2* column = packed + tile.slab_row * p.packed_row + tile.ow0 + g + t;
#pragma unroll
  for (int r = 0; r < kInputRows; ++r) {
    const uint2 b[2] = {column[r * p.packed_row], column[r * p.packed_row + 8]};  // [n8 half]
#pragma unroll
    for (int kh = 0; kh < kKernel; ++kh) {
      const int j = r - kh;
      if (j < 0 || j >= kRows) continue;
#pragma unroll
      for (int part = kParts - 1; part >= 0; --part)  // lo part first
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          if (kFirst && kh == 0 && part == kParts - 1)  // r == j: the accumulator's first MMA
            mma_f16_from(acc[j][half], a[kh][part], b[half], bias);
          else
            mma_f16(acc[j][half], a[kh][part], b[half]);
        }
    }
  }
}

// The TF32 fallback, straight from x in global memory (channel ci's planes od.. of the item, from
// the slab's first row): m16n8k8 slices (kd; kh pair q) x kw with k = kw + 4s for kh = 2q + s, so
// b0 = x[row j+2q][col g+t], b1 = x[row j+2q+1][same] (+8 for the second n8).
template <Operands kOps>
__device__ __forceinline__ void accumulate_channel_tf32(const TcParams& p, const float* slab, int ci,
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
      x[r][0] = to_tf32(__ldg(rows + r * p.w));
      x[r][1] = to_tf32(__ldg(rows + r * p.w + 8));
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
          for (int half = 0; half < 2; ++half) mma_tf32(acc[j][half], a[q][part], x[j + 2 * q][half], x[j + 2 * q + 1][half]);
  }
}

// A work item: sample n, output depth od, band of row tiles. The persistent grid walks items
// gridDim.x apart; that stride is kept in the same mixed radix (n, od, band), so the next item is a
// few adds and compares (item / tiles and tile / bands cost ~130 instructions per item; run 21).
struct ItemCoords {
  int n, od, band;
};

__device__ __forceinline__ ItemCoords item_coords(const TcParams& p, int item) {
  const int n = item / p.tiles;
  const int tile_index = item - n * p.tiles;
  const int od = tile_index / p.bands;
  return {n, od, tile_index - od * p.bands};
}

// c + stride, both in (n, od < ods, band < bands).
__device__ __forceinline__ ItemCoords next_item(const TcParams& p, ItemCoords c, const ItemCoords& stride) {
  c.band += stride.band;
  if (c.band >= p.bands) {
    c.band -= p.bands;
    ++c.od;
  }
  c.od += stride.od;
  if (c.od >= p.ods) {
    c.od -= p.ods;
    ++c.n;
  }
  c.n += stride.n;
  return c;
}

// This warp's place in a band, the same for every item: its row tile within the band and its
// column tile.
struct WarpPlace {
  int band_row;
  int col_tile;
};

// What one work item covers, and this warp's tile.
struct Item {
  const float* sample;
  int n;
  int tile_index;  // item within the sample: od * bands + band
  int od;
  int slab_row0, slab_rows;  // the input rows staged
  bool active;               // this warp has a tile in the band
  WarpTile tile;
};

__device__ __forceinline__ Item describe_item(const TcParams& p, const ItemCoords& c, const WarpPlace& place) {
  Item it{};
  it.n = c.n;
  it.od = c.od;
  it.tile_index = c.od * p.bands + c.band;
  it.sample = p.x + static_cast<long long>(c.n) * p.sample_stride;
  const int first_row_tile = c.band * p.band_row_tiles;
  const int band_row_tiles = min(p.band_row_tiles, p.row_tiles - first_row_tile);
  it.slab_row0 = tile_origin(first_row_tile, p.oh, kRows);
  it.slab_rows = tile_origin(first_row_tile + band_row_tiles - 1, p.oh, kRows) + kInputRows - it.slab_row0;
  it.active = place.band_row < band_row_tiles;
  const int row_tile = first_row_tile + place.band_row;
  const int oh0 = tile_origin(row_tile, p.oh, kRows);
  it.tile.ow0 = tile_origin(place.col_tile, p.ow, kCols);
  it.tile.slab_row = oh0 - it.slab_row0;
  it.tile.duplicate_rows = row_tile * kRows - oh0;
  it.tile.duplicate_cols = place.col_tile * kCols - it.tile.ow0;
  return it;
}

// The address of channel ci's slab in x: plane od, the slab's first row.
__device__ __forceinline__ const float* channel_slab(const TcParams& p, const Item& it, int ci) {
  return it.sample + (static_cast<long long>(ci * p.d + it.od) * p.h + it.slab_row0) * p.w;
}

// Stage input channel ci of an item: 4 planes (od .. od+3) x slab_rows rows x W, each plane one
// contiguous run in global memory and in the stage. With bulk copies (16-byte aligned runs) producer
// thread 0 issues the four runs and they complete a phase of `landed`; otherwise every producer
// thread issues cp.async of 16 or 4 bytes in plain loops (unrolled, the runtime trip count cost
// ~100 instructions per channel per warp; the bulk copies save the ~50 that remain; RECORD.md).

__device__ __forceinline__ void stage_channel(const TcParams& p, float* stage, const Item& it, int ci, bool bulk,
                                              int thread, unsigned landed) {
  const int run = it.slab_rows * p.w;
  const long long plane = static_cast<long long>(p.h) * p.w;
  const float* src = channel_slab(p, it, ci);
  if (bulk) {
    if (thread == 0) {
      const unsigned bytes = static_cast<unsigned>(run * sizeof(float));
      mbarrier_expect_bytes(landed, kKernel * bytes);
#pragma unroll
      for (int kd = 0; kd < kKernel; ++kd) bulk_copy(stage + kd * run, src + kd * plane, bytes, landed);
    }
  } else if (p.copy16) {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd) {
      const float* from = src + kd * plane;
      float* to = stage + kd * run;
#pragma unroll 1
      for (int i = thread * 4; i < run; i += kProducerThreads * 4) cp_async16(to + i, from + i);
    }
  } else {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd) {
      const float* from = src + kd * plane;
      float* to = stage + kd * run;
#pragma unroll 1
      for (int i = thread; i < run; i += kProducerThreads) cp_async4(to + i, from + i);
    }
  }
}

// Convert the staged channel into B fragments: entry (row, col) = {half2(planes 0, 1),
// half2(planes 2, 3)}. Thread (quad, row0) converts columns 4*quad .. +3 of rows row0,
// row0 + pack_row_step, ...; a warp writes consecutive 32-byte runs (no bank conflicts). Returns
// max|x| over the values it read (the fp16 range check).
__device__ __forceinline__ float convert_channel(const TcParams& p, const float* stage, uint2* packed, int slab_rows,
                                                 int quad, int row0) {
  const int plane = slab_rows * p.w;
  const int col0 = 4 * quad;
  float m = 0.f;
#pragma unroll 1
  for (int row = row0; row < slab_rows; row += p.pack_row_step) {
    const float* src = stage + row * p.w + col0;
    float v[kKernel][4];  // [plane][column]
    if (p.copy16) {
#pragma unroll
      for (int kd = 0; kd < kKernel; ++kd) {
        const float4 q = *reinterpret_cast<const float4*>(src + kd * plane);
        v[kd][0] = q.x;
        v[kd][1] = q.y;
        v[kd][2] = q.z;
        v[kd][3] = q.w;
      }
    } else {
      // W % 4 != 0 or x misaligned: the last group of a row may pass W; those entries are never read.
#pragma unroll
      for (int kd = 0; kd < kKernel; ++kd)
#pragma unroll
        for (int c = 0; c < 4; ++c) v[kd][c] = col0 + c < p.w ? src[kd * plane + c] : 0.f;
    }
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd)
#pragma unroll
      for (int c = 0; c < 4; ++c) m = fmaxf(m, fabsf(v[kd][c]));
    uint4* dst = reinterpret_cast<uint4*>(packed + row * p.packed_row + col0);
    dst[0] = make_uint4(half_pair(v[0][0], v[1][0]), half_pair(v[2][0], v[3][0]), half_pair(v[0][1], v[1][1]),
                        half_pair(v[2][1], v[3][1]));
    dst[1] = make_uint4(half_pair(v[0][2], v[1][2]), half_pair(v[2][2], v[3][2]), half_pair(v[0][3], v[1][3]),
                        half_pair(v[2][3], v[3][3]));
  }
  return m;
}

// acc[j][half] = {channel g at columns 2t, 2t+1; channel g+8 at the same} of output row j,
// columns 8*half + ...: the bias of channels g and g+8.
template <Operands kOps>
__device__ __forceinline__ void init_accumulators(const TcParams& p, float (&acc)[kRows][2][4]) {
  const int g = (threadIdx.x % 32) / 4;
  const float* bias = is_half(kOps) ? p.half_bias : p.bias;
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
// gate = clamp(y/6 + 1/2, 0, 1) is one saturating FMA on acc with u/6, and d = (h - pivot)/u one FMA.
// All lanes of a channel shift by one pivot, a value from the tile itself, so sum(d^2) does not
// cancel the way a plain sum of squares would when |mean| >> std, and lanes merge by addition.
// Per output: 4 instructions. Duplicate columns are a fixed set per lane (kept out by keeping one
// sum per column class and selecting at the end); duplicate rows are leading rows (loop stops).
// half_unscale: u of channels g and g + 8, read once per kernel, not per item (two global loads
// whose latency every item's statistics waited for).
__device__ __forceinline__ void warp_tile_moments(const Item& it, const float2& half_unscale, bool half_operands,
                                                  const float (&acc)[kRows][2][4], Moments<float> (&moments)[2]) {
  const int lane = threadIdx.x % 32;
  const int t = lane % 4;
  float unscale[2], gate_scale[2], pivot[2], sum[2][4] = {}, squares[2][4] = {};
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    unscale[c] = half_operands ? (c == 0 ? half_unscale.x : half_unscale.y) : 1.f;
    gate_scale[c] = unscale[c] * (1.0f / 6.0f);  // exact: unscale is a power of two
    const float last = acc[kRows - 1][0][2 * c];  // the last row is never a duplicate
    pivot[c] = __shfl_sync(0xffffffffu, last * fminf(fmaxf(fmaf(last, gate_scale[c], 0.5f), 0.f), 1.f), lane & ~3);
  }
#pragma unroll
  for (int j = kRows - 1; j >= 0; --j) {
    if (j < it.tile.duplicate_rows) break;  // leading rows belong to the previous row tile
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int c = 0; c < 2; ++c)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float a = acc[j][half][2 * c + e];
          const float d = fmaf(a, fminf(fmaxf(fmaf(a, gate_scale[c], 0.5f), 0.f), 1.f), -pivot[c]);
          sum[c][2 * half + e] += d;
          squares[c][2 * half + e] = fmaf(d, d, squares[c][2 * half + e]);
        }
  }
  const float count = static_cast<float>((kRows - it.tile.duplicate_rows) * (kCols - it.tile.duplicate_cols));
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    float s = 0.f, q = 0.f;
#pragma unroll
    for (int cls = 0; cls < 4; ++cls) {
      const bool kept = 8 * (cls / 2) + 2 * t + cls % 2 >= it.tile.duplicate_cols;  // column ow0 + that
      s += kept ? sum[c][cls] : 0.f;
      q += kept ? squares[c][cls] : 0.f;
    }
    // Lanes 4g .. 4g+3 hold the same channels; a warp tile always owns a row and a column.
    moments[c] = lanes_to_moments<1, 4>(s, q, count, pivot[c], unscale[c]);
  }
}

// Where the warp tiles' moments of an item meet: slot item % kMomentSlots of the group. Phase k of
// barrier `written` + slot completes when every MMA thread of the group has written item
// k * kMomentSlots + slot (arrivals: kMmaThreads); one warp then merges it (merge_item). No warp
// waits for another at an item's end: a block barrier there took 6% of the MMA warps' stall samples
// (run 29), and the merging warp's wait comes an item late, when the others are long done.
struct MomentSlots {
  Moments<float> (*warp_moments)[kWarps][kCout];  // [kMomentSlots]
  unsigned written;                               // shared address of uint64_t[kMomentSlots]
};

// The item in `slot` (its `use`-th item there), its warp tiles' moments merged into one Moments per
// channel and written to the item's partials. partial: the item's index in (B, tiles). The merge is
// moments.h's merge_all (count-weighted mean, then M2 from each tile's deviation), not a chain of
// Chan merges: one division instead of five dependent ones. One warp does it while the group's
// other warps start the next item, and a group drains its stages at the pace of its slowest warp:
// the shorter merge took tf32 from 0.303 to 0.292 ms (RECORD.md, run 35); taking turns at it, with
// the two changes to warp_tile_moments, 2-3% more (run 43).
__device__ __forceinline__ void merge_item(const TcParams& p, const MomentSlots& slots, int slot, int use,
                                           long long partial) {
  const int lane = threadIdx.x % 32;
  mbarrier_wait(barrier_at(slots.written, slot), use & 1);
  if (lane < kCout) {
    Moments<float> tiles[kWarps];  // a warp without a tile wrote zeros: it adds nothing
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) tiles[wi] = slots.warp_moments[slot][wi][lane];
    p.partials[partial * kCout + lane] = merge_all(tiles);
  }
}

// The end of an item, once its last channel's MMAs are done: the fp16 range verdict (x_max is
// max|x| over every value the producers converted for the item, the same for all MMA warps of the
// group), the TF32 recomputation where it failed (rare), the warp tile's moments into the item's
// slot.
template <Operands kFast, Operands kFallback>
__device__ __forceinline__ void finish_item(const TcParams& p, const Item& it, float x_max, const float2& half_unscale,
                                            int slot, int warp, const MomentSlots& slots, float (&acc)[kRows][2][4]) {
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  Moments<float> moments[2] = {};
  if (!(x_max <= kHalfMax) || !(x_max >= kHalfSmallest)) {
    // Some |x| beyond fp16's range, or all of them too small for its precision: recompute the
    // warp tile with TF32 operands read from x itself.
    if (it.active) {
      init_accumulators<kFallback>(p, acc);
      for (int ci = 0; ci < p.cin; ++ci) accumulate_channel_tf32<kFallback>(p, channel_slab(p, it, ci), ci, it.tile, acc);
      warp_tile_moments(it, half_unscale, false, acc, moments);
    }
  } else if (it.active) {
    warp_tile_moments(it, half_unscale, true, acc, moments);
  }
  if (t == 0) {
    slots.warp_moments[slot][warp][g] = moments[0];
    slots.warp_moments[slot][warp][g + 8] = moments[1];
  }
  mbarrier_arrive(barrier_at(slots.written, slot));
}

// One group's shared state: its fp32 stages, its converted stages, and the barriers between them.
// Step s (the s-th (item, channel) of the group's stream) uses fp32 stage s % kStages and converted
// stage s % kPacked; `landed` completes when a stage's bulk copies arrive, `converted` when the
// producers have written a converted stage (arrivals: every producer thread), `drained` when the MMA
// warps are done reading it (arrivals: every MMA thread). x_max[b][w]: max|x| that producer warp w
// saw converting stage b, as float bits (non-negative floats order as their bits).
struct GroupPipeline {
  float* stages;
  uint2* packed;
  unsigned landed;     // shared addresses of uint64_t[kStages]
  unsigned converted;  // uint64_t[kPacked]
  unsigned drained;    // uint64_t[kPacked]
  unsigned (*x_max)[kProducerWarps];
};

// A group's items: item group_index, group_index + groups, ... (groups = gridDim.x * kGroups, and
// group_index = blockIdx.x + group * gridDim.x, so small batches spread over SMs first).
__device__ __forceinline__ int first_item(int group) { return static_cast<int>(blockIdx.x + group * gridDim.x); }
__device__ __forceinline__ int item_stride() { return static_cast<int>(gridDim.x * kGroups); }

// Where the producers stage next: the (item, channel) step kStages - 1 steps ahead of the one they
// convert, so kStages - 1 channels' bulk copies are in flight while they convert.
struct StagingCursor {
  ItemCoords coords;
  Item it;
  int ci;
  bool valid;  // false past the group's last item
};

// Stage the cursor's step into fp32 stage `step` % kStages and move the cursor one step on. Every
// call commits one cp.async group (empty past the end or on the bulk path), so waiting for all but
// the newest kStages - 1 groups means this step's copies have landed.
__device__ __forceinline__ void stage_and_advance(const TcParams& p, const GroupPipeline& pipe, StagingCursor& c,
                                                  const ItemCoords& stride, int step, bool bulk, int thread) {
  if (c.valid)
    stage_channel(p, pipe.stages + (step % kStages) * p.stage_floats, c.it, c.ci, bulk, thread,
                  barrier_at(pipe.landed, step % kStages));
  cp_async_commit();
  if (++c.ci < p.cin) return;
  c.ci = 0;
  c.coords = next_item(p, c.coords, stride);
  c.valid = c.coords.n < p.batch;
  if (c.valid) c.it = describe_item(p, c.coords, WarpPlace{0, 0});
}

// Producer warps: stage step s + kStages - 1 by bulk copies while converting step s into the
// converted stage the MMA warps drained kPacked steps ago; an fp32 stage is refilled only after all
// producers of the group have converted it (named barrier).
__device__ __forceinline__ void produce_items(const TcParams& p, int group, int thread, const GroupPipeline& pipe) {
  if (first_item(group) >= p.items) return;
  const int pack_quad = thread % p.pack_quads;
  const int pack_row0 = thread / p.pack_quads;  // >= pack_row_step: no share of the conversion
  const bool bulk = p.copy16;                   // 16-byte aligned runs
  const ItemCoords stride = item_coords(p, item_stride());
  ItemCoords coords = item_coords(p, first_item(group));
  Item it = describe_item(p, coords, WarpPlace{0, 0});
  StagingCursor staging{coords, it, 0, true};
  for (int ahead = 0; ahead < kStages - 1; ++ahead) stage_and_advance(p, pipe, staging, stride, ahead, bulk, thread);
  int step = 0;
  while (true) {
    for (int ci = 0; ci < p.cin; ++ci, ++step) {
      // The fp32 stage being filled was last read by the conversion in step - 1 (then the barrier).
      stage_and_advance(p, pipe, staging, stride, step + kStages - 1, bulk, thread);
      cp_async_wait<kStages - 1>();
      if (bulk)
        mbarrier_wait(barrier_at(pipe.landed, step % kStages), (step / kStages) & 1);
      else
        named_barrier(kProducerBarrier + group, kProducerThreads);  // every producer's cp.async landed
      const int b = step % kPacked;
      // Use k = step / kPacked of converted stage b needs the MMA warps' drain k - 1 (phase k - 1 of
      // drained[b]); a fresh barrier counts phase -1 (parity 1) as complete.
      mbarrier_wait(barrier_at(pipe.drained, b), ((step / kPacked) & 1) ^ 1);
      const float* current = pipe.stages + (step % kStages) * p.stage_floats;
      float x_max = 0.f;
      if (pack_row0 < p.pack_row_step)
        x_max = convert_channel(p, current, pipe.packed + b * p.packed_entries, it.slab_rows, pack_quad, pack_row0);
      const unsigned warp_max = __reduce_max_sync(0xffffffffu, __float_as_uint(x_max));
      if (thread % 32 == 0) pipe.x_max[b][thread / 32] = warp_max;
      mbarrier_arrive(barrier_at(pipe.converted, b));
      named_barrier(kProducerBarrier + group, kProducerThreads);  // the fp32 stage may be refilled
    }
    coords = next_item(p, coords, stride);
    if (coords.n >= p.batch) break;
    it = describe_item(p, coords, WarpPlace{0, 0});
  }
}

// MMA warps: for each (item, channel) step, wait for its converted stage, run the warp tile's
// MMAs, release the stage; at an item's end, its moments (finish_item). `warp`: within the group.
template <Operands kFast, Operands kFallback>
__device__ __forceinline__ void consume_items(const TcParams& p, int group, int warp, const GroupPipeline& pipe,
                                              const MomentSlots& slots) {
  if (first_item(group) >= p.items) return;
  const WarpPlace place{warp / p.col_tiles, warp % p.col_tiles};
  const ItemCoords stride = item_coords(p, item_stride());
  ItemCoords coords = item_coords(p, first_item(group));
  // The channel's bias (scaled as the fp16 accumulators are), for the item's first MMAs.
  const int g = (threadIdx.x % 32) / 4;
  const float2 bias{p.half_bias[g], p.half_bias[g + 8]};
  const float2 half_unscale{p.half_unscale[g], p.half_unscale[g + 8]};
  Item it = describe_item(p, coords, place);
  int step = 0;
  float acc[kRows][2][4];  // set by each item's first MMAs
  // Warp i % kWarps merges item i at the end of item i + 1 (the last item after the loop): the
  // merges rotate, so no warp of the group, which advances at its slowest warp's pace, does them
  // all. A slot is written again kMomentSlots items later, after that merge: the merging warp
  // drains no step of item i + 2 before merging item i, the producers stay within kPacked steps of
  // its drains, and every item has at least one step, so no warp finishes an item beyond
  // i + 1 + kPacked < i + kMomentSlots.
  long long pending_partial = -1;  // the item this warp merges next, as index into (B, tiles)
  int pending_slot = 0, pending_use = 0;
  for (int item = 0;; ++item) {
    const int slot = item % kMomentSlots;
    unsigned x_max = 0;
    for (int ci = 0; ci < p.cin; ++ci, ++step) {
      const int b = step % kPacked;
      const ChannelWeights<kFast> weights = load_channel_weights<kFast>(p, ci);
      mbarrier_wait(barrier_at(pipe.converted, b), (step / kPacked) & 1);
#pragma unroll
      for (int w = 0; w < kProducerWarps; ++w) x_max = max(x_max, pipe.x_max[b][w]);
      const uint2* packed = pipe.packed + b * p.packed_entries;
      if (it.active) {
        if (ci == 0)
          accumulate_channel_half<kFast, true>(p, packed, weights, it.tile, bias, acc);
        else
          accumulate_channel_half<kFast, false>(p, packed, weights, it.tile, bias, acc);
      }
      mbarrier_arrive(barrier_at(pipe.drained, b));
    }
    finish_item<kFast, kFallback>(p, it, __uint_as_float(x_max), half_unscale, slot, warp, slots, acc);
    if (pending_partial >= 0) merge_item(p, slots, pending_slot, pending_use, pending_partial);
    pending_partial = -1;
    if (item % kWarps == warp) {
      pending_partial = static_cast<long long>(it.n) * p.tiles + it.tile_index;
      pending_slot = slot;
      pending_use = item / kMomentSlots;
    }
    coords = next_item(p, coords, stride);
    if (coords.n >= p.batch) break;
    it = describe_item(p, coords, place);
  }
  if (pending_partial >= 0) merge_item(p, slots, pending_slot, pending_use, pending_partial);
}

// B = 1: the GroupNorm-mean epilogue at the end of this kernel, by the MMA warps of the block that
// finishes last, instead of by a second kernel. B = 1's time followed the host's (9-22 us per call
// for checks, allocations and two launches, against 10-13 us of moments kernel; RECORD.md, run 38);
// with one launch fewer its medians were 14-18 us in nine runs, against 13-22 us (runs 39-40).
// The threadFenceReduction pattern: every MMA thread fences its writes (the merged partials) before
// its block counts itself done, and the last block fences again before it reads them.
__device__ __forceinline__ void epilogue_in_last_block(const TcParams& p) {
  __shared__ bool last;
  __threadfence();
  named_barrier(kMmaBarrier, kMmaWarpsPerBlock * 32);
  if (threadIdx.x == 0) last = atomicAdd(p.done_blocks, 1u) == gridDim.x - 1;
  named_barrier(kMmaBarrier, kMmaWarpsPerBlock * 32);
  if (!last) return;
  __threadfence();
  // A warp per (sample, group), its lanes over the group's channels and the tiles (moments.h): a
  // group of the 16 channels has 1, 2, 4, 8 or 16.
  const long long groups = p.epilogue.batch * p.epilogue.groups;
  for (long long i = threadIdx.x / 32; i < groups; i += kMmaWarpsPerBlock) {
    switch (kCout / p.epilogue.groups) {
      case 1: groupnorm_mean_epilogue_warp<1>(p.epilogue, i); break;
      case 2: groupnorm_mean_epilogue_warp<2>(p.epilogue, i); break;
      case 4: groupnorm_mean_epilogue_warp<4>(p.epilogue, i); break;
      case 8: groupnorm_mean_epilogue_warp<8>(p.epilogue, i); break;
      default: groupnorm_mean_epilogue_warp<16>(p.epilogue, i); break;
    }
  }
  if (threadIdx.x == 0) *p.done_blocks = 0;  // for the next launch on this stream
}

// A persistent grid of one block per SM, each running kGroups independent item streams; within a
// group, producer warps and MMA warps hand converted stages over through mbarriers, so conversion
// and staging overlap the MMAs instead of alternating with them at block barriers.
template <Operands kFast, Operands kFallback>
__global__ void __launch_bounds__(kThreads, 1) conv_k4_tensorcore_moments_kernel(TcParams p) {
  static_assert(is_half(kFast) && !is_half(kFallback), "fp16 fast path, TF32 fallback");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The epilogue (launched as a programmatic dependent) may be scheduled now; it waits for this
  // grid's completion before reading anything.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  extern __shared__ float4 smem_vec[];
  __shared__ uint64_t landed[kGroups][kStages], converted[kGroups][kPacked], drained[kGroups][kPacked];
  __shared__ unsigned x_max[kGroups][kPacked][kProducerWarps];
  __shared__ Moments<float> warp_moments[kGroups][kMomentSlots][kWarps][kCout];
  __shared__ uint64_t written[kGroups][kMomentSlots];
  if (threadIdx.x == 0) {
    for (int q = 0; q < kGroups; ++q) {
      for (int b = 0; b < kStages; ++b) mbarrier_init(shared_address(&landed[q][b]), 1);
      for (int b = 0; b < kPacked; ++b) {
        mbarrier_init(shared_address(&converted[q][b]), kProducerThreads);
        mbarrier_init(shared_address(&drained[q][b]), kMmaThreads);
      }
      for (int slot = 0; slot < kMomentSlots; ++slot) mbarrier_init(shared_address(&written[q][slot]), kMmaThreads);
    }
  }
  __syncthreads();
  const int warp = threadIdx.x / 32;
  const bool producer = warp >= kMmaWarpsPerBlock;
  const int group = producer ? (warp - kMmaWarpsPerBlock) / kProducerWarps : warp / kWarps;
  // Group q's shared memory: kStages fp32 stages, then kPacked converted stages (16-byte aligned:
  // stage_floats and packed_entries are multiples of 4).
  float* base = reinterpret_cast<float*>(smem_vec) + group * (kStages * p.stage_floats + 2 * kPacked * p.packed_entries);
  const GroupPipeline pipe{base,
                           reinterpret_cast<uint2*>(base + kStages * p.stage_floats),
                           shared_address(landed[group]),
                           shared_address(converted[group]),
                           shared_address(drained[group]),
                           x_max[group]};
  if (producer) {
    release_registers<kProducerRegisters>();
    produce_items(p, group, threadIdx.x - kMmaWarpsPerBlock * 32 - group * kProducerThreads, pipe);
  } else {
    claim_registers<kMmaRegisters>();
    consume_items<kFast, kFallback>(p, group, warp - group * kWarps, pipe, MomentSlots{warp_moments[group], shared_address(written[group])});
    if (p.done_blocks != nullptr) epilogue_in_last_block(p);
  }
}

// ------------------------------------------------------------------------------------------------
// The planes kernel: wgmma (sm_90a), output planes streamed along depth. Both modes, at the
// standard plane size and batches of kPlanesMinBatch or more; there it replaces the kernel above
// (B = 1024 on an H200: accurate 0.418 -> 0.302 ms, tf32 0.293 -> 0.245; RECORD.md, run 80).
//
// GEMM per input row r of a warp's 16-column strip of output plane od (OPTIMIZATION.md 3.14-3.15):
//   D_r = sum over ci, part of A(ci, r) x W(ci, part),  W = [W(kh 0) | ... | W(kh 3)]  (K 16 x N 64)
// K = (kd, kw) as in the mma.sync path (k = 8*pp + 2*kw + kdl, kd = 2*pp + kdl), N = 16*kh + channel,
// one m64n64k16 per channel and weight part (the accurate mode's hi and lo: twice the MMAs). Output
// row j = bias + sum over kh of D_(j+kh)'s kh columns. Those 16 columns have the lane layout of an
// m16n16 accumulator: lane (g, t) holds positions g and g + 8 (cls) of channels 2t, 2t + 1, 8 + 2t,
// 9 + 2t (c), D element 8*kh + 4*(c / 2) + 2*cls + c % 2. So a warp keeps a rolling window of four
// output rows (8 FADDs per lane and kh per input row) and takes each row's statistics as soon as it
// is complete (4 FP32 instructions per value, as warp_tile_moments).
//
// A's registers are pairs {x[plane p], x[plane p + 1]} (kdl = 0, 1) at one row and column: the pair
// plane P_p, fp16. Output plane od reads P_od (pp = 0) and P_(od+2) (pp = 1). So a sample's OD
// output planes read its OD + 2 pair planes, each converted once and read by two output planes,
// made from its OD + 3 input planes, each copied once (one 4 KB bulk copy per channel). The kernel
// above copies each output plane's 4 input planes and converts them afresh: 4x the copies, twice
// the conversions, and that producer side was what held a wgmma kernel back (3.14).
//
// Block: one producer warpgroup walks the block's share of the batch's output planes (block_planes)
// plane by plane: bulk copies kInputRing input planes ahead, converts pair plane q (with the fp16 range
// check) into ring slot q % kPairRing once the output planes that read the slot's previous pair
// plane are done. kPlanesWarpgroups consumer warpgroups take the block's output planes two at a
// time (item k: planes 2k and 2k + 1 of the block's stream), warp w on strip w % 2 of plane
// 2k + w / 2; each warp streams the whole strip's kPlaneSide input rows (the standard layer's 29
// output rows from 32: 10% of the wgmmas complete no output row). Each warp writes its own Moments
// per channel: tiles per sample = OD x 2. An item whose pair planes leave fp16's range takes the
// TF32 route of the kernel above, per warp, from x. Limits (else the kernel above): Cin 3,
// H = W = kPlaneSide, OD >= kPlanesMinDepth, 16-byte aligned x, B >= kPlanesMinBatch, an sm_90a build
// on a Hopper GPU.
constexpr int kPlanesCin = 3;    // unrolled: the channels of an input row are one wgmma chain
constexpr int kPlaneSide = 32;   // H = W: rows and row strides are constants of the unrolled loop
constexpr int kPlaneEntries = kPlaneSide * kPlaneSide;
constexpr int kPlaneOutRows = kPlaneSide - kKernel + 1;
constexpr int kPlanesN = kKernel * kCout;
constexpr int kPlanesWarpgroups = 3;
constexpr int kInputRing = 4;    // input planes (all channels, fp32) landed or in flight
// Pair planes. A warpgroup's next item reads pair planes up to 2 * kPlanesWarpgroups + 2 beyond its
// previous item's last (6 output planes on, and 2 more where they cross a sample's end: with
// OD >= kPlanesMinDepth at most one). The ring exceeds that, so no consumer waits on a slot that has
// yet to take its previous pair plane (whose phase parity would pass the wait). 13 pair and 3 input
// planes were 1-2% slower (run 79).
constexpr int kPairRing = 10;
constexpr int kPlanesMinDepth = 6;
// Items. The producer waits for item k before it writes pair plane 2k + 5 + kPairRing at the
// latest, and item k + kDoneRing reads pair planes from 2k + 2 * kDoneRing on: so no item finishes
// on a done barrier whose previous phase the producer has yet to wait for.
constexpr int kDoneRing = 16;
constexpr int kPlanesProducerThreads = 128;
constexpr int kPlanesProducerWarps = kPlanesProducerThreads / 32;
constexpr int kPlanesTileBytes = 16 * kPlanesN * 2;  // one B tile: K 16 x N 64, fp16
// From B = 64 on it beats the kernel above (H100, run 82, accurate / tf32: B = 64 0.039 / 0.034 ms
// against 0.044 / 0.035; B = 333 0.109 / 0.092 against 0.142 / 0.103). Smaller batches, B = 1 above
// all, keep the kernel above, which spreads a sample over the GPU and runs the epilogue itself.
constexpr int64_t kPlanesMinBatch = 64;
// Registers (setmaxnreg from 128 each): the consumers' unrolled loop has 519 spill instructions at
// 128, 5 at 144; the producers keep a pair plane's 24 loads in flight (with two at a time, ~3,000
// cycles per pair plane and tf32 0.283 ms against the base's 0.293, run 78; all 24: 0.243 against
// 0.294-0.297, run 79).
constexpr int kPlanesMmaRegisters = 144;
constexpr int kPlanesProducerRegisters = 80;
static_assert(kPlanesWarpgroups * 128 * kPlanesMmaRegisters + kPlanesProducerThreads * kPlanesProducerRegisters <=
                  kRegisterFile,
              "the reallocated registers fit the register file");
static_assert(kPlanesWarpgroups * 128 + kPlanesProducerThreads == kThreads, "the block size of the kernel above");
static_assert(kPairRing > 2 * kPlanesWarpgroups + 2, "a warpgroup's next item stays within the pair ring");
static_assert(2 * kDoneRing > kPairRing + 5, "the producer waits for an item before its done barrier turns over");
static_assert(kPlaneEntries % (4 * kPlanesProducerThreads) == 0, "the conversion's 4-entry groups split evenly");

// The block's shared state. Input plane s of the block's stream (numbered as block_planes says)
// lands in inputs[s % kInputRing] (all channels) and completes a phase of landed; pair plane q is
// written to pairs[q % kPairRing] and completes a phase of full (arrivals: every producer thread),
// with max|x| per producer warp in pair_max; item k's four warps arrive on done[k % kDoneRing] when
// they have read its pair planes.
struct PlanesShared {
  float* inputs;     // [kInputRing][kPlanesCin][kPlaneEntries]
  uint32_t* pairs;   // [kPairRing][kPlanesCin][kPlaneEntries]: half2 {plane p, plane p + 1}
  unsigned landed;   // uint64_t[kInputRing]
  unsigned full;     // uint64_t[kPairRing]
  unsigned done;     // uint64_t[kDoneRing]
  unsigned (*pair_max)[kPlanesProducerWarps];
};

__device__ __forceinline__ void wait_phase(unsigned barriers, int ring, int use) {
  mbarrier_wait(barrier_at(barriers, use % ring), (use / ring) & 1);
}

// The block's output planes: [start, start + count) of the batch's B x OD in sample-major order,
// the same share for every block to one plane (whole samples per block, rounds of 8 and 7 on the
// standard batch, were 0.5% slower there; run 82). A block's streams run over
// segments, one per sample it touches: segment `seg` is sample first_sample + seg, output planes
// [b, e) of it; its pair planes are b .. e + 1 and its input planes b .. e + 2. Numbered along the
// block's streams, output plane od of sample n is n * OD + od - start, its pp = 0 pair plane that
// + 2 * seg, and input plane i of sample n that + 3 * seg.
struct PlaneRange {
  int start, count, first_sample;
};
__device__ __forceinline__ PlaneRange block_planes(const TcParams& p) {
  const long long total = static_cast<long long>(p.batch) * p.ods;
  const int start = static_cast<int>(total * blockIdx.x / gridDim.x);
  const int end = static_cast<int>(total * (blockIdx.x + 1) / gridDim.x);
  return {start, end - start, start / p.ods};
}
// Segment seg of the block's range: its sample and output planes [b, e).
struct Segment {
  int sample, b, e;
};
__device__ __forceinline__ Segment segment_of(const TcParams& p, const PlaneRange& r, int seg) {
  const int sample = r.first_sample + seg, first = sample * p.ods;
  return {sample, max(r.start, first) - first, min(r.start + r.count, first + p.ods) - first};
}

// Producer thread 0: input plane `plane` of `sample`, every channel, into inputs[input % kInputRing]
// (`input`: its number along the block's stream).
__device__ __forceinline__ void copy_input_plane(const TcParams& p, const PlanesShared& s, int sample, int plane,
                                                 int input) {
  const float* src = p.x + static_cast<long long>(sample) * p.sample_stride + plane * kPlaneEntries;
  const int slot = input % kInputRing;
  const unsigned bar = barrier_at(s.landed, slot);
  constexpr unsigned kBytes = kPlaneEntries * sizeof(float);
  mbarrier_expect_bytes(bar, kPlanesCin * kBytes);
#pragma unroll
  for (int ci = 0; ci < kPlanesCin; ++ci)
    bulk_copy(s.inputs + (slot * kPlanesCin + ci) * kPlaneEntries, src + static_cast<long long>(ci) * p.d * kPlaneEntries,
              kBytes, bar);
}

// Producer thread 0's walk over the block's input planes, copying them in stream order.
struct CopyCursor {
  int seg, plane, input;  // next to copy: input plane `plane` of segment seg, number `input`
  Segment segment;
};
__device__ __forceinline__ void copy_next(const TcParams& p, const PlanesShared& s, const PlaneRange& r, CopyCursor& c) {
  copy_input_plane(p, s, c.segment.sample, c.plane, c.input);
  ++c.input;
  if (++c.plane < c.segment.e + kKernel - 1) return;
  c.segment = segment_of(p, r, ++c.seg);
  c.plane = c.segment.b;
}

// The producer warpgroup: the block's pair planes in stream order. users[slot]: the items that read
// the pair plane in that slot (-1: none), for the wait before the slot is written again.
__device__ __forceinline__ void produce_planes(const TcParams& p, int thread, const PlanesShared& s,
                                               int (*users)[2]) {
  const PlaneRange r = block_planes(p);
  const int segments = (r.start + r.count - 1) / p.ods - r.first_sample + 1;
  const int inputs = r.count + (kKernel - 1) * segments;
  CopyCursor copies{0, 0, 0, segment_of(p, r, 0)};
  copies.plane = copies.segment.b;
  if (thread == 0)
    while (copies.input < min(kInputRing, inputs)) copy_next(p, s, r, copies);
  int q = 0;
  for (int seg = 0; seg < segments; ++seg) {
    const Segment segment = segment_of(p, r, seg);
    for (int plane = segment.b; plane <= segment.e + 1; ++plane, ++q) {
      const int at = segment.sample * p.ods + plane - r.start;  // output plane `plane` in the stream
      const int first_input = at + 3 * seg;
      const int slot = q % kPairRing;
      if (q >= kPairRing) {
        // The slot's previous pair plane: wait for the items that read it.
#pragma unroll
        for (int u = 0; u < 2; ++u)
          if (users[slot][u] >= 0) wait_phase(s.done, kDoneRing, users[slot][u]);
      }
      wait_phase(s.landed, kInputRing, first_input);
      wait_phase(s.landed, kInputRing, first_input + 1);
      const float* low = s.inputs + (first_input % kInputRing) * kPlanesCin * kPlaneEntries;
      const float* high = s.inputs + ((first_input + 1) % kInputRing) * kPlanesCin * kPlaneEntries;
      uint32_t* pair = s.pairs + slot * kPlanesCin * kPlaneEntries;
      // All loads first: the conversion is latency-bound on shared loads that queue behind the
      // consumers' (run 78: ~3,000 cycles per pair plane with two groups of loads in flight).
      constexpr int kLoads = kPlanesCin * kPlaneEntries / (4 * kPlanesProducerThreads);
      float4 x0[kLoads], x1[kLoads];
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int e = 4 * (thread + i * kPlanesProducerThreads);
        x0[i] = *reinterpret_cast<const float4*>(low + e);
        x1[i] = *reinterpret_cast<const float4*>(high + e);
      }
      float m = 0.f;
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        m = fmaxf(m, fmaxf(fmaxf(fabsf(x0[i].x), fabsf(x0[i].y)), fmaxf(fabsf(x0[i].z), fabsf(x0[i].w))));
        m = fmaxf(m, fmaxf(fmaxf(fabsf(x1[i].x), fabsf(x1[i].y)), fmaxf(fabsf(x1[i].z), fabsf(x1[i].w))));
        *reinterpret_cast<uint4*>(pair + 4 * (thread + i * kPlanesProducerThreads)) =
            make_uint4(half_pair(x0[i].x, x1[i].x), half_pair(x0[i].y, x1[i].y), half_pair(x0[i].z, x1[i].z),
                       half_pair(x0[i].w, x1[i].w));
      }
      const unsigned warp_max = __reduce_max_sync(0xffffffffu, __float_as_uint(m));
      if (thread % 32 == 0) s.pair_max[slot][thread / 32] = warp_max;
      mbarrier_arrive(barrier_at(s.full, slot));
      // Every producer thread is past its waits on users[slot] and its reads of input plane
      // first_input, which is read for the last time here (and first_input + 1 too at the segment's
      // last pair plane).
      named_barrier(kProducerBarrier, kPlanesProducerThreads);
      if (thread == 0) {
        // Output planes `plane` (pp = 0) and plane - 2 (pp = 1) read this pair plane, if in the segment.
        users[slot][0] = plane < segment.e ? at / 2 : -1;
        users[slot][1] = plane - 2 >= segment.b ? (at - 2) / 2 : -1;
        const int finished = first_input + (plane == segment.e + 1 ? 2 : 1);
        while (copies.input < min(finished + kInputRing, inputs)) copy_next(p, s, r, copies);
      }
    }
  }
}

// One warp's strip (16 columns from col0, all kPlaneOutRows rows) of an output plane from its two
// pair planes (all channels each): the rows streamed through wgmma, each complete output row's
// statistics on the way. Returns the strip's moments of channels 2t, 2t + 1, 8 + 2t, 9 + 2t in
// lanes g = 0; the first dup_cols columns are left out (the other strip's).
template <int kParts>
__device__ __forceinline__ void stream_plane(const uint32_t* pair_low, const uint32_t* pair_high, int col0,
                                             int dup_cols, uint64_t tiles, int zero, const float (&bias)[4],
                                             const float (&unscale)[4], Moments<float> (&moments)[4]) {
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  // Lane (g, t)'s A fragment of input row r: columns g + t and g + 8 + t of both pair planes,
  // loaded straight into the fragment's registers (constant offsets from two addresses).
  const uint32_t* low = pair_low + col0 + g + t;
  const uint32_t* high = pair_high + col0 + g + t;
  constexpr uint64_t kTileStep = kPlanesTileBytes >> 4;  // descriptor units
  float gate_scale[4], pivot[4] = {}, sum[4][2] = {}, squares[4][2] = {};
#pragma unroll
  for (int c = 0; c < 4; ++c) gate_scale[c] = unscale[c] * (1.0f / 6.0f);  // exact: a power of two
  const auto at = [](int c, int cls) { return 4 * (c / 2) + 2 * cls + c % 2; };
  // Two Ds alternating by row: with one, ptxas moved the adds that read D_r past the wgmmas of the
  // next rows, which overwrite it (RECORD.md, run 72).
  float dd[2][32], out[kKernel][8];
#pragma unroll
  for (int r = 0; r < kPlaneSide; ++r) {
    float(&d)[32] = dd[r % 2];
    uint32_t a[kPlanesCin][4];
#pragma unroll
    for (int ci = 0; ci < kPlanesCin; ++ci) {
      const int offset = ci * kPlaneEntries + r * kPlaneSide;
      a[ci][0] = low[offset];
      a[ci][1] = low[offset + 8];
      a[ci][2] = high[offset];
      a[ci][3] = high[offset + 8];
    }
    wgmma::pin(d);
    wgmma::fence();
    // Channel ci's weight parts are tiles ci * kParts + part; the lo part first, as the mma.sync path.
    wgmma::m64n64k16(d, a[0], tiles + (kParts - 1) * kTileStep, zero);
#pragma unroll
    for (int ci = 0; ci < kPlanesCin; ++ci)
#pragma unroll
      for (int part = kParts - 1; part >= 0; --part)
        if (ci > 0 || part < kParts - 1) wgmma::m64n64k16(d, a[ci], tiles + (ci * kParts + part) * kTileStep, 1);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::pin(d);
    // Output row r - kh gets D_r's kh columns; row r starts from the bias. Before r = 3 some adds go
    // to window slots of rows not started yet, which their first add then overwrites.
#pragma unroll
    for (int kh = 0; kh < kKernel; ++kh) {
      float(&o)[8] = out[(r - kh + kKernel) % kKernel];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = (kh == 0 ? bias[2 * (e / 4) + e % 2] : o[e]) + d[8 * kh + e];
    }
    if (r < kKernel - 1) continue;
    const int j = r - (kKernel - 1);  // output row j is complete
    const float(&row)[8] = out[j % kKernel];
    if (j == 0) {  // the pivots: a value of the strip itself, the same for every lane of a channel
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float v = row[at(c, 0)];
        pivot[c] = __shfl_sync(0xffffffffu, v * fminf(fmaxf(fmaf(v, gate_scale[c], 0.5f), 0.f), 1.f), t);
      }
    }
#pragma unroll
    for (int c = 0; c < 4; ++c)
#pragma unroll
      for (int cls = 0; cls < 2; ++cls) {
        const float v = row[at(c, cls)];
        const float dv = fmaf(v, fminf(fmaxf(fmaf(v, gate_scale[c], 0.5f), 0.f), 1.f), -pivot[c]);
        sum[c][cls] += dv;
        squares[c][cls] = fmaf(dv, dv, squares[c][cls]);
      }
  }
  const float count = static_cast<float>(kPlaneOutRows * (kCols - dup_cols));
  const bool kept[2] = {g >= dup_cols, g + 8 >= dup_cols};  // column col0 + g + 8 * cls
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const float s = (kept[0] ? sum[c][0] : 0.f) + (kept[1] ? sum[c][1] : 0.f);
    const float q = (kept[0] ? squares[c][0] : 0.f) + (kept[1] ? squares[c][1] : 0.f);
    moments[c] = lanes_to_moments<4, 32>(s, q, count, pivot[c], unscale[c]);  // lanes t, t + 4, ...
  }
}

// The TF32 fallback for one warp's strip (x beyond fp16's range, or a build without wgmma): the
// mma.sync path's 10-row tiles straight from x, the last shifted back; moments of channels g and
// g + 8 in lanes t = 0.
template <Operands kFallback>
__device__ __forceinline__ void plane_fallback(const TcParams& p, int n, int od, int col0, int dup_cols,
                                               Moments<float> (&moments)[2]) {
  Item it{};
  it.n = n;
  it.od = od;
  it.sample = p.x + static_cast<long long>(n) * p.sample_stride;
  it.slab_row0 = 0;
  it.slab_rows = p.h;
  it.active = true;
#pragma unroll 1
  for (int tile = 0; tile * kRows < kPlaneOutRows; ++tile) {
    const int row0 = tile_origin(tile, kPlaneOutRows, kRows);
    it.tile = WarpTile{row0, col0, tile * kRows - row0, dup_cols};
    float acc[kRows][2][4];
    init_accumulators<kFallback>(p, acc);
    for (int ci = 0; ci < kPlanesCin; ++ci) accumulate_channel_tf32<kFallback>(p, channel_slab(p, it, ci), ci, it.tile, acc);
    Moments<float> tile_moments[2];
    warp_tile_moments(it, float2{1.f, 1.f}, false, acc, tile_moments);
    moments[0] = merge_moments(moments[0], tile_moments[0]);
    moments[1] = merge_moments(moments[1], tile_moments[1]);
  }
}

// A consumer warpgroup: items wg, wg + kPlanesWarpgroups, ... of the block's stream of output
// planes, two per item (the last item's second warp pair repeats the first plane if the stream
// has an odd count, and writes nothing).
template <Operands kFallback>
__device__ __forceinline__ void consume_planes(const TcParams& p, int wg, const PlanesShared& s, uint64_t tiles) {
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int w = (threadIdx.x / 32) % 4;
  const int strip = w % 2;
  const int col0 = strip == 1 ? p.ow - kCols : 0, dup_cols = strip == 1 ? 2 * kCols - p.ow : 0;
  const int lane_channels[4] = {2 * t, 2 * t + 1, 8 + 2 * t, 9 + 2 * t};
  float bias[4], unscale[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    bias[c] = p.half_bias[lane_channels[c]];
    unscale[c] = p.half_unscale[lane_channels[c]];
  }
  const PlaneRange r = block_planes(p);
  // Output plane `at` of the block's stream: its sample and depth, and its pp = 0 pair plane.
  const auto locate = [&](int at, int& n, int& od, int& pair) {
    n = (r.start + at) / p.ods;
    od = r.start + at - n * p.ods;
    pair = at + 2 * (n - r.first_sample);
  };
  for (int k = wg; 2 * k < r.count; k += kPlanesWarpgroups) {
    // Both planes' pair planes, so that all four warps take the same route (wgmma is collective).
    unsigned x_max_bits = 0;
    for (int h = 0; h < 2; ++h) {
      int n, od, q;
      locate(min(2 * k + h, r.count - 1), n, od, q);
      for (int pp = 0; pp < 2; ++pp) {
        wait_phase(s.full, kPairRing, q + 2 * pp);
#pragma unroll
        for (int pw = 0; pw < kPlanesProducerWarps; ++pw) x_max_bits = max(x_max_bits, s.pair_max[(q + 2 * pp) % kPairRing][pw]);
      }
    }
    const float x_max = __uint_as_float(x_max_bits);
    const bool writes = 2 * k + w / 2 < r.count;
    int n, od, q;
    locate(writes ? 2 * k + w / 2 : 2 * k, n, od, q);
    Moments<float>* partial = p.partials + (static_cast<long long>(n) * p.tiles + 2 * od + strip) * kCout;
    if (wgmma::kAvailable && x_max <= kHalfMax && x_max >= kHalfSmallest) {
      Moments<float> moments[4];
      stream_plane<weight_parts(kFallback)>(s.pairs + (q % kPairRing) * kPlanesCin * kPlaneEntries,
                   s.pairs + ((q + 2) % kPairRing) * kPlanesCin * kPlaneEntries, col0, dup_cols, tiles,
                   p.cin - kPlanesCin, bias, unscale, moments);
      __syncwarp();
      if (lane == 0) mbarrier_arrive(barrier_at(s.done, k % kDoneRing));
      if (writes && g == 0) {
#pragma unroll
        for (int c = 0; c < 4; ++c) partial[lane_channels[c]] = moments[c];
      }
    } else {
      __syncwarp();  // every lane's reads of pair_max come before the release
      if (lane == 0) mbarrier_arrive(barrier_at(s.done, k % kDoneRing));
      Moments<float> moments[2] = {};
      plane_fallback<kFallback>(p, n, od, col0, dup_cols, moments);
      if (writes && t == 0) {
        partial[g] = moments[0];
        partial[g + 8] = moments[1];
      }
    }
  }
}

template <Operands kFallback>
__global__ void __launch_bounds__(kThreads, 1) conv_k4_planes_wgmma_kernel(TcParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");  // as the mma.sync kernel
#endif
  extern __shared__ float4 smem_vec[];
  __shared__ uint64_t landed[kInputRing], full[kPairRing], done[kDoneRing];
  __shared__ unsigned pair_max[kPairRing][kPlanesProducerWarps];
  __shared__ int pair_users[kPairRing][2];
  if (threadIdx.x == 0) {
    for (int b = 0; b < kInputRing; ++b) mbarrier_init(shared_address(&landed[b]), 1);
    for (int b = 0; b < kPairRing; ++b) mbarrier_init(shared_address(&full[b]), kPlanesProducerThreads);
    for (int b = 0; b < kDoneRing; ++b) mbarrier_init(shared_address(&done[b]), 4);  // a warp each
  }
  float* inputs = reinterpret_cast<float*>(smem_vec);
  uint32_t* pairs = reinterpret_cast<uint32_t*>(inputs + kInputRing * kPlanesCin * kPlaneEntries);
  uint4* tiles = reinterpret_cast<uint4*>(pairs + kPairRing * kPlanesCin * kPlaneEntries);
  constexpr int kTileVectors = kPlanesCin * weight_parts(kFallback) * kPlanesTileBytes / 16;
  for (int i = threadIdx.x; i < kTileVectors; i += kThreads) tiles[i] = __ldg(p.wgmma_tiles + i);
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the tiles, visible to wgmma
  __syncthreads();
  const PlanesShared s{inputs, pairs, shared_address(landed), shared_address(full), shared_address(done), pair_max};
  const int warp = threadIdx.x / 32;
  if (warp >= kMmaWarpsPerBlock) {
    release_registers<kPlanesProducerRegisters>();
    produce_planes(p, threadIdx.x - kMmaWarpsPerBlock * 32, s, pair_users);
  } else {
    claim_registers<kPlanesMmaRegisters>();
    consume_planes<kFallback>(p, warp / 4, s, wgmma::descriptor(shared_address(tiles)));
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

// Entries per converted row: W rounded up to a 4-column group.
int packed_row(const at::Tensor& x) { return (static_cast<int>(x.size(4)) + 3) / 4 * 4; }

// Rows of the widest band's slab.
int slab_rows(const at::Tensor& x) { return stage_floats(x) / (kKernel * static_cast<int>(x.size(4))); }

// Per group: kStages fp32 stages, then kPacked converted stages of slab rows x packed_row entries.
size_t shared_bytes(const at::Tensor& x) {
  return kGroups * (sizeof(float) * kStages * stage_floats(x) + sizeof(uint2) * kPacked * slab_rows(x) * packed_row(x));
}

// One block per SM: its dynamic share of the SM's 227 KB, leaving room for the static part.
constexpr size_t kMaxSharedBytes = 200 * 1024;
// The accurate mode's error is x's fp16 rounding, which is unbiased and averages out over the S
// output positions of a channel's mean: it scales as 1/sqrt(S). Measured 2.2e-6 (U[0,1) inputs;
// DESIGN-NOTES: 6.2e-6 for N(0,1)) at the standard S = 10,933; the randomized sweep saw 1.4e-5 at
// S = 336. Below 8192 positions (predicted <= 7.2e-6 for N(0,1)) the float32 kernel keeps the
// accurate mode's 1e-5 promise instead.
constexpr int64_t kAccurateMinPositions = 8192;

// The planes kernel's shared memory: kInputRing input planes, kPairRing pair planes, the B tiles.
constexpr size_t planes_shared_bytes(int parts) {
  return (kInputRing + kPairRing) * kPlanesCin * kPlaneEntries * sizeof(float) + kPlanesCin * parts * kPlanesTileBytes;
}
static_assert(planes_shared_bytes(2) <= kMaxSharedBytes, "the planes kernel's rings and tiles fit");
// FUSED3D_WGMMA_BUILT: the build has an sm_90a target (CMakeLists.txt, tools/fused3d_torch.py);
// without it the kernel would take its TF32 fallback everywhere.
bool planes_kernel_runs(const at::Tensor& x) {
#if defined(FUSED3D_WGMMA_BUILT)
  const bool hopper = at::cuda::getDeviceProperties(x.get_device())->major == 9;
#else
  const bool hopper = false;
#endif
  return hopper && x.size(0) >= kPlanesMinBatch && x.size(1) == kPlanesCin &&
         x.size(2) - kKernel + 1 >= kPlanesMinDepth && x.size(3) == kPlaneSide && x.size(4) == kPlaneSide &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
}

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
  return g.oh >= kRows && g.ow >= kCols && g.col_tiles <= kWarps && x.size(4) <= kMaxWidth &&
         shared_bytes(x) <= kMaxSharedBytes;
}

bool tensorcore_k4_runs_planes_kernel(const at::Tensor& x) { return tensorcore_kernel::planes_kernel_runs(x); }

int tensorcore_k4_tiles(const at::Tensor& x) {
  using namespace tensorcore_kernel;  // this file's internals
  const int ods = static_cast<int>(x.size(2) - kKernel + 1);
  return planes_kernel_runs(x) ? ods * 2 : ods * geometry(x).bands;  // planes kernel: a tile per strip
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
  // A fragments of m16n8k16, k = 8*pp + 2*kw + kdl: register rho of lane 4g + t holds channel
  // g + 8*(rho % 2) at kd = 2*(rho / 2) + {0, 1}, kw = t. (co = 8*chh + g, ci, kd = 2*pp + kdl, kh, kw = t)
  // -> (ci, kh, lane = 4g + t, rho = (pp, chh), kdl)
  const at::Tensor scaled = (w * scale.view({kCout, 1, 1, 1, 1}))
                                .view({2, 8, cin, 2, 2, kKernel, kKernel})
                                .permute({2, 5, 1, 6, 3, 0, 4})
                                .reshape({cin, kKernel, 32, 8});
  const at::Tensor half_parts = split(scaled, [](const at::Tensor& v) { return v.to(at::kHalf); });
  packed.half_fragments = half_parts.permute({1, 2, 0, 3, 4}).contiguous();  // (ci, kh, part, lane, 8)
  // The planes kernel's B tiles, (ci, part): element (k, n = 16*kh + co) of a tile at
  // (2 * (n / 8) + k / 8) * 64 + (n % 8) * 8 + k % 8 halves (wgmma::b_offset), k = 8*pp + 2*kw + kdl.
  // (co = 8*chh + chl, ci, kd = 2*pp + kdl, kh, kw) -> (ci, kh, chh, pp, chl, kw, kdl)
  const at::Tensor tiles = (w * scale.view({kCout, 1, 1, 1, 1}))
                               .view({2, 8, cin, 2, 2, kKernel, kKernel})
                               .permute({2, 5, 0, 3, 1, 6, 4})
                               .reshape({cin, kPlanesTileBytes / 2});
  packed.wgmma_tiles = split(tiles, [](const at::Tensor& v) { return v.to(at::kHalf); }).transpose(0, 1).contiguous();
  packed.half_bias = (bias * scale).contiguous();
  packed.half_unscale = scale.reciprocal().contiguous();

  // TF32 fallback, m16n8k8 with k = kw + 4s for kh = 2q + s: register rho of lane 4g + t holds
  // channel g + 8*(rho % 2) at kh = 2q + rho / 2, kw = t.
  // (co = 8*chh + g, ci, kd, kh = 2q + s, kw = t) -> (ci, kd, q, lane, rho = (s, chh))
  const at::Tensor grouped = w.view({2, 8, cin, kKernel, 2, 2, kKernel})
                                 .permute({2, 3, 4, 1, 6, 5, 0})
                                 .reshape({cin, kKernel, 2, 32, 4});
  const at::Tensor tf32_parts = split(grouped, round_to_tf32);
  packed.tf32_fragments = tf32_parts.permute({1, 2, 3, 0, 4, 5}).contiguous();  // (ci, kd, q, part, lane, 4)
  packed.bias = bias;
  return packed;
}

bool tensorcore_k4_runs_epilogue(int64_t batch) {
  using namespace tensorcore_kernel;  // this file's internals
  return batch <= kRunsEpilogueMaxBatch;
}

namespace {
// The count of finished blocks for kernels that run the epilogue, one per (device, stream): launches
// on one stream run one after another, and each leaves it at zero for the next. Allocated on first
// use and kept for the process (4 bytes per stream).
unsigned* done_counter(int device, cudaStream_t stream) {
  static std::mutex mutex;
  static std::map<std::pair<int, cudaStream_t>, unsigned*> counters;
  std::lock_guard<std::mutex> lock(mutex);
  unsigned*& counter = counters[{device, stream}];
  if (counter == nullptr) {
    C10_CUDA_CHECK(cudaMalloc(&counter, sizeof(unsigned)));
    C10_CUDA_CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), stream));
  }
  return counter;
}
}  // namespace

void launch_tensorcore_k4_moments(const at::Tensor& x, const TensorcoreWeights& packed, at::Tensor& partials,
                                  int tiles, const EpilogueParams* epilogue, cudaStream_t stream) {
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
  p.ods = static_cast<int>(x.size(2)) - kKernel + 1;
  p.tiles = tiles;
  p.batch = static_cast<int>(x.size(0));
  TORCH_CHECK(x.size(0) * static_cast<long long>(tiles) < std::numeric_limits<int>::max(), "fused3d: batch ",
              x.size(0), " has more work items than 32-bit indices reach");
  p.items = static_cast<int>(x.size(0) * tiles);
  p.stage_floats = stage_floats(x);
  p.packed_row = packed_row(x);
  p.pack_quads = p.packed_row / 4;
  p.packed_entries = slab_rows(x) * p.packed_row;
  p.pack_row_step = kProducerThreads / p.pack_quads;  // >= 1: W <= kMaxWidth (tensorcore_k4_can_run)
  p.copy16 = p.w % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  p.half_w = reinterpret_cast<const uint4*>(packed.half_fragments.data_ptr<at::Half>());
  p.tf32_w = reinterpret_cast<const float4*>(packed.tf32_fragments.data_ptr<float>());
  p.half_bias = packed.half_bias.data_ptr<float>();
  p.half_unscale = packed.half_unscale.data_ptr<float>();
  p.bias = packed.bias.data_ptr<float>();
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  if (epilogue != nullptr) {
    p.epilogue = *epilogue;
    p.done_blocks = done_counter(x.get_device(), stream);
  }

  const bool planes = planes_kernel_runs(x);
  if (planes) {
    TORCH_CHECK(epilogue == nullptr, "fused3d: the planes kernel does not run the epilogue");
    p.items = static_cast<int>(std::min<int64_t>(x.size(0) * p.ods, std::numeric_limits<int>::max()));  // output planes
    p.wgmma_tiles = reinterpret_cast<const uint4*>(packed.wgmma_tiles.data_ptr<at::Half>());
  }
  const size_t smem = planes ? planes_shared_bytes(packed.parts) : shared_bytes(x);
  const auto launch = [&](auto kernel) {
    // Persistent grid: as many blocks as fit on the GPU at once, or one per item if fewer. The
    // occupancy query and the shared-memory attribute are done once per kernel, device and size:
    // each costs about a microsecond, and B=1 runs in ~30. The kernel is part of the key: both
    // kernels have the same type, so this lambda (and its statics) is shared by them. The
    // attribute is the kernel's largest size, never this one's: a smaller value set for a later
    // shape would make launches of a cached larger one fail (the randomized sweep found it).
    static std::mutex mutex;
    static std::map<std::tuple<const void*, int, size_t>, int> blocks_per_sm;  // (kernel, device, shared bytes)
    int per_sm = 0;
    {
      std::lock_guard<std::mutex> lock(mutex);
      const std::tuple<const void*, int, size_t> key{reinterpret_cast<const void*>(kernel), x.get_device(), smem};
      auto found = blocks_per_sm.find(key);
      if (found == blocks_per_sm.end()) {
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kMaxSharedBytes)));
        C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
        found = blocks_per_sm.emplace(key, std::max(per_sm, 1)).first;
      }
      per_sm = found->second;
    }
    const long long resident = static_cast<long long>(per_sm) * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    // Each block runs kGroups item streams; a small batch takes one stream per SM first.
    const long long blocks = std::min(static_cast<long long>(p.items), resident);
    kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (planes && packed.parts == 2)
    launch(conv_k4_planes_wgmma_kernel<Operands::kTf32Split>);
  else if (planes)
    launch(conv_k4_planes_wgmma_kernel<Operands::kTf32>);
  else if (packed.parts == 2)
    launch(conv_k4_tensorcore_moments_kernel<Operands::kHalfSplit, Operands::kTf32Split>);
  else
    launch(conv_k4_tensorcore_moments_kernel<Operands::kHalf, Operands::kTf32>);
}

}  // namespace fused3d
