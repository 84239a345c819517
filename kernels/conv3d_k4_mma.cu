// The mma.sync kernel: conv3d (kernel 4x4x4, 16 output channels, any Cin) -> bias -> hardswish ->
// per-(sample, channel) moments, as an implicit GEMM on tensor cores through mma.sync. The
// GroupNorm-mean epilogue follows in epilogue.cu; at B = 1 this kernel's last block runs it
// (epilogue_in_last_block). OPTIMIZATION.md 4.3 explains the design and its measured choices.
//
// GEMM view, weights on the left: D[channel][position] += W[channel][k] * X[k][position], with
// M = the 16 output channels, N = 8 consecutive output columns of one output row, and K = Cin*64
// taken 16 at a time for fp16 m16n8k16 as (ci; kh; k = 8*pp + 2*kw + kdl for kd = 2*pp + kdl).
// Lane (g = lane/4, t = lane%4) then holds, for output row oh + j and kernel row kh,
//   b0 = {x[plane 0][row j+kh][col g+t], x[plane 1][same]},  b1 = the same of planes 2 and 3
// (planes ci, od+kd; rows and columns relative to the warp tile). So a B fragment depends only on
// the input row j+kh and the column: each of a warp tile's kRows+3 input rows is loaded once per
// channel (two 8-byte shared loads: columns g+t and g+8+t) and feeds the MMAs of up to four output
// rows, one per kh; the weights (A, 4 registers per kh and part) stay in registers for the channel.
//
// Shared memory. Each input channel's slab (4 planes x the band's input rows x W, fp32) is staged
// by bulk copies (cp.async where the runs are not 16-byte aligned), kStages deep; then the
// producer warps convert it once into that B layout, in one of kPacked converted stages: entry
// (row, col) = {half2(plane 0, plane 1), half2(plane 2, plane 3)}, 8 bytes, rows of W rounded up
// to 4 entries. The conversion reads every staged value once, which is also where the fp16 range
// check happens; the MMA loop does no conversion and no address arithmetic beyond one add per row.
//
// Precision (OPTIMIZATION.md 3): accurate: x in fp16, weights split w = hi + lo (both fp16, two
// MMAs); tf32: x and weights in fp16 (one MMA; fp16 and TF32 both keep 11 significant bits). The
// weights are scaled per output channel by a power of two into [1, 2) and the accumulator scaled
// back; where any |x| of an item exceeds fp16's range, or all are below 2^-10, each MMA warp
// recomputes its tile on the TF32 route (tensorcore_common.h).
//
// Work: a work item is one (sample, od, band of row tiles). The grid is persistent, one block per
// SM, and a block runs kGroups independent streams of (item, channel) steps. Warp specialization:
// in each group, kProducerWarps producer warps stage step s+2 and convert step s while the kWarps
// MMA warps compute step s-1; they hand converted stages over through mbarriers (`converted`,
// `drained`), never a block-wide barrier, so staging, conversion and MMAs overlap (accurate 0.507
// -> 0.416 ms, tf32 0.389 -> 0.303 against all warps doing all three in turn; H100). setmaxnreg
// moves registers from the producers to the MMA warps (sm_90a). Warp w of a group computes one
// warp tile (kRows output rows x 16 columns, two n8 MMAs); edge tiles shift back to stay inside
// the input and leave the duplicate rows/columns out of the statistics. Each item writes its own
// partial moments and merges run in a fixed order: deterministic whatever the grid size.
//
// Limits (else the general kernel runs): kernel 4x4x4, Cout 16, stride 1, no padding, dilation 1,
// conv groups 1, float32, OH >= kRows, 16 <= OW <= 16*kWarps; in the accurate mode also at least
// kAccurateMinPositions output positions per sample.
#include "conv3d_k4_mma.h"

#include "device_code.h"
#include "persistent_grid.h"
#include "ptx.h"
#include "tensorcore_common.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

namespace fused3d::k4_mma {

using namespace k4;

struct Traits : WarpTileTraits {
  // A block runs kGroups independent item streams. Each group has kWarps MMA warps (one warp tile
  // each: the standard layer's 3 row x 2 column tiles) and kProducerWarps producer warps that stage
  // and convert the input channels the MMA warps read.
  static constexpr int kWarps = 6;
  static constexpr int kProducerWarps = 2;
  static constexpr int kGroups = 2;
  static constexpr int kMmaThreads = kWarps * 32;               // per group
  static constexpr int kProducerThreads = kProducerWarps * 32;  // per group
  static constexpr int kMmaWarpsPerBlock = kGroups * kWarps;
  static constexpr int kThreads = kGroups * (kMmaThreads + kProducerThreads);
  // Pipeline depth: fp32 stages (the producers stage kStages - 1 steps ahead of the one they
  // convert) and converted (fp16) stages. 3 and 3 against 2 and 2: tf32 1.5% faster, accurate the
  // same; 2 to 4 stages and 2 or 3 converted were all within 2% (H100).
  static constexpr int kStages = 3;
  static constexpr int kPacked = 3;
  // Items whose warp moments can be in shared memory at once: an item is merged at the end of the
  // next one, and no warp gets more than kPacked items beyond that (see consume_items).
  static constexpr int kMomentSlots = kPacked + 2;
  // Registers: one block per SM starts at kRegistersPerSm / kThreads = 128 per thread; then the
  // producer warpgroup gives registers back (setmaxnreg, sm_90a) and the MMA warpgroups take them.
  // 152 / 56 made the producers spill: tf32 0.327 ms against 0.300 at 144 / 80, accurate the same.
  static constexpr int kEntryRegisters = kRegistersPerSm / kThreads;
  static constexpr int kMmaRegisters = 144;
  static constexpr int kProducerRegisters = 80;
  static constexpr int kMaxWidth = kCols * kWarps + kKernel - 1;  // W at the widest OW the kernel takes
  // Named barriers (0 is __syncthreads): one per group's producers, and one for all MMA warps of
  // the block, used once at the end when the kernel runs the epilogue.
  static constexpr int kProducerBarrier = 1;
  static constexpr int kMmaBarrier = kProducerBarrier + kGroups;
  // The kernel runs the epilogue itself up to this batch: a warp per (sample, group) of its 12 MMA
  // warps, in one round up to 12 groups. Larger batches take the epilogue kernel, which spreads the
  // groups over the GPU instead of running them in rounds on one block.
  static constexpr int64_t kRunsEpilogueMaxBatch = 1;

  static_assert(kMmaWarpsPerBlock % kWarpsPerWarpgroup == 0 && (kGroups * kProducerWarps) % kWarpsPerWarpgroup == 0,
                "each role fills whole warpgroups: setmaxnreg applies per warpgroup");
  static_assert(kEntryRegisters == 128 && kThreads * kEntryRegisters == kRegistersPerSm,
                "one block per SM at 128 registers per thread on entry");
  static_assert(kMmaWarpsPerBlock * 32 * kMmaRegisters + kGroups * kProducerThreads * kProducerRegisters <=
                    kRegistersPerSm,
                "the reallocated registers fit the register file");
  static_assert(kMmaRegisters % 8 == 0 && kProducerRegisters % 8 == 0, "setmaxnreg counts are multiples of 8");
  static_assert((kMaxWidth + 3) / 4 <= kProducerThreads, "the conversion gives each 4-column group at least one thread");
  static_assert(kMmaBarrier < 16, "16 hardware barriers per block");
};

// The accurate mode's error is x's fp16 rounding, which is unbiased and averages out over the S
// output positions of a channel's mean: it scales as 1/sqrt(S). Measured 2.2e-6 (U[0,1) inputs;
// 6.2e-6 for N(0,1) in emulation) at the standard S = 10,933; a layer with S = 336 gave 1.4e-5.
// Below 8192 positions (predicted <= 7.2e-6 for N(0,1)) the float32 kernel keeps the accurate
// mode's 1e-5 promise instead. On inputs with few distinct values the rounding is systematic and
// does not average out at any S (1.2e-4 to 1.5e-4 in emulation, OPTIMIZATION.md 3.6).
constexpr int64_t kAccurateMinPositions = 8192;

struct Params {
  const float* x;           // (B, Cin, D, H, W), contiguous
  long long sample_stride;  // Cin*D*H*W
  int cin, d, h, w;
  int oh, ow;
  int batch;
  int items;                                              // B * tiles (< 2^31, checked)
  int row_tiles, col_tiles, band_row_tiles, bands, ods, tiles;  // tiles = items per sample = OD * bands
  int stage_floats;    // one fp32 stage: 4 planes x slab rows x W
  int packed_row;      // entries per converted row: W rounded up to 4
  int packed_entries;  // one converted stage: slab rows x packed_row
  int pack_quads;      // packed_row / 4: 4-column groups per row
  int pack_row_step;   // kProducerThreads / pack_quads
  bool copy16;         // 16-byte cp.async (W % 4 == 0, aligned x)
  const uint4* half_w;        // (Cin, 4 kh, parts, 32 lanes) A fragments, fp16, scaled weights
  const float4* tf32_w;       // (Cin, 4 kd, 2 kh pairs, parts, 32 lanes) A fragments, TF32
  const float* x_pivots;          // (B, Cin): taken off x before it is rounded (k4_sample_terms.h)
  const float* sample_half_bias;  // (B, 16): bias + the pivots' contribution, times the channel scale
  const float* half_unscale;      // 1 / channel scale (16)
  const float* sample_bias;       // (B, 16): bias + the pivots' contribution, for the TF32 route
  Moments<float>* partials;   // (B, tiles, 16)
  // B = 1 (runs_epilogue): the block that finishes last runs the epilogue; the counter of finished
  // blocks is the stream's own (done_counter). Otherwise done_blocks is null.
  EpilogueParams epilogue;
  unsigned* done_blocks;
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

// acc += this channel's contribution, from the converted (fp16) stage. The B fragments of input row
// r of the warp tile (columns g+t and g+8+t) feed output rows j = r - kh, kh = 0..3, each with the
// weights of that kh (A, 4 registers per kh and weight part, loaded once per channel). So the loop
// runs over input rows, and each row's two fragments (two 8-byte shared loads) feed up to
// 4 x 2 x parts MMAs; only a row of fragments is live at a time (all 13 rows' fragments loaded first
// held 52 registers and gained nothing).
// kFirst: the item's first channel, whose first MMA per accumulator (kh 0, the first part) starts
// from `bias` instead of the accumulator.
template <Operands kOps>
struct ChannelWeights {
  uint4 a[kKernel][weight_parts(kOps)];  // [kh][part]: A fragments
};

// Channel ci's A fragments. The MMA warps load them before they wait for the channel's converted
// stage: the load's latency passes during the wait instead of before the channel's first MMA.
template <Operands kOps>
__device__ __forceinline__ ChannelWeights<kOps> load_channel_weights(const Params& p, int ci) {
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
__device__ __forceinline__ void accumulate_channel_half(const Params& p, const uint2* packed,
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
            ptx::mma_f16_from(acc[j][half], a[kh][part], b[half], bias);
          else
            ptx::mma_f16(acc[j][half], a[kh][part], b[half]);
        }
    }
  }
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

__device__ __forceinline__ Item describe_item(const Params& p, const ItemCoords& c, const WarpPlace& place) {
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
__device__ __forceinline__ const float* channel_slab(const Params& p, const Item& it, int ci) {
  return k4::channel_slab(p, it.sample, it.od, it.slab_row0, ci);
}

// Stage input channel ci of an item: 4 planes (od .. od+3) x slab_rows rows x W, each plane one
// contiguous run in global memory and in the stage. With bulk copies (16-byte aligned runs) producer
// thread 0 issues the four runs and they complete a phase of `landed`; otherwise every producer
// thread issues cp.async of 16 or 4 bytes in plain loops (unrolled, the runtime trip count cost
// ~100 instructions per channel per warp; the bulk copies save the ~50 that remain).

__device__ __forceinline__ void stage_channel(const Params& p, float* stage, const Item& it, int ci, bool bulk,
                                              int thread, unsigned landed) {
  const int run = it.slab_rows * p.w;
  const long long plane = static_cast<long long>(p.h) * p.w;
  const float* src = channel_slab(p, it, ci);
  if (bulk) {
    if (thread == 0) {
      const unsigned bytes = static_cast<unsigned>(run * sizeof(float));
      ptx::mbarrier_expect_bytes(landed, kKernel * bytes);
#pragma unroll
      for (int kd = 0; kd < kKernel; ++kd) ptx::bulk_copy(stage + kd * run, src + kd * plane, bytes, landed);
    }
  } else if (p.copy16) {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd) {
      const float* from = src + kd * plane;
      float* to = stage + kd * run;
#pragma unroll 1
      for (int i = thread * 4; i < run; i += Traits::kProducerThreads * 4) ptx::cp_async16(to + i, from + i);
    }
  } else {
#pragma unroll
    for (int kd = 0; kd < kKernel; ++kd) {
      const float* from = src + kd * plane;
      float* to = stage + kd * run;
#pragma unroll 1
      for (int i = thread; i < run; i += Traits::kProducerThreads) ptx::cp_async4(to + i, from + i);
    }
  }
}

// Convert the staged channel into B fragments: entry (row, col) = {half2(planes 0, 1),
// half2(planes 2, 3)}. Thread (quad, row0) converts columns 4*quad .. +3 of rows row0,
// row0 + pack_row_step, ...; a warp writes consecutive 32-byte runs (no bank conflicts). What it
// converts is x - x_pivot (k4_sample_terms.h). Returns max |x - x_pivot| over the values it read
// (the fp16 range check).
__device__ __forceinline__ float convert_channel(const Params& p, const float* stage, uint2* packed, int slab_rows,
                                                 int quad, int row0, float x_pivot) {
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
        v[kd][0] = q.x - x_pivot;
        v[kd][1] = q.y - x_pivot;
        v[kd][2] = q.z - x_pivot;
        v[kd][3] = q.w - x_pivot;
      }
    } else {
      // W % 4 != 0 or x misaligned: the last group of a row may pass W; those entries are never read.
#pragma unroll
      for (int kd = 0; kd < kKernel; ++kd)
#pragma unroll
        for (int c = 0; c < 4; ++c) v[kd][c] = col0 + c < p.w ? src[kd * plane + c] - x_pivot : 0.f;
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


// Where the warp tiles' moments of an item meet: slot item % kMomentSlots of the group. Use `item`
// of the ring `written` completes when every MMA thread of the group has written the item
// (arrivals: kMmaThreads); one warp then merges it (merge_item). No warp
// waits for another at an item's end: a block barrier there took 6% of the MMA warps' stall samples
// (H100), and the merging warp's wait comes an item late, when the others are long done.
struct MomentSlots {
  Moments<float> (*warp_moments)[Traits::kWarps][kCout];  // [kMomentSlots]
  ptx::BarrierRing<Traits::kMomentSlots> written;  // item i's slot: i % kMomentSlots
};

// Item `item` of the group's stream, its warp tiles' moments merged into one Moments per channel and
// written to the item's partials. partial: the item's index in (B, tiles). The merge is
// moments.h's merge_all (count-weighted mean, then M2 from each tile's deviation), not a chain of
// Chan merges: one division instead of five dependent ones. One warp does it while the group's
// other warps start the next item, and a group drains its stages at the pace of its slowest warp:
// the shorter merge took tf32 from 0.303 to 0.292 ms; taking turns at it, with the two-pass
// statistics of warp_tile_moments, 2-3% more (H100).
__device__ __forceinline__ void merge_item(const Params& p, const MomentSlots& slots, int item, long long partial) {
  const int lane = threadIdx.x % 32;
  const int slot = item % Traits::kMomentSlots;
  slots.written.wait(item);
  if (lane < kCout) {
    Moments<float> tiles[Traits::kWarps];  // a warp without a tile wrote zeros: it adds nothing
#pragma unroll
    for (int wi = 0; wi < Traits::kWarps; ++wi) tiles[wi] = slots.warp_moments[slot][wi][lane];
    p.partials[partial * kCout + lane] = merge_all(tiles);
  }
}

// The end of an item, once its last channel's MMAs are done: the fp16 range verdict (x_max is
// max|x| over every value the producers converted for the item, the same for all MMA warps of the
// group), the TF32 recomputation where it failed (rare), the warp tile's moments into the item's
// slot.
template <Operands kFallback>
__device__ __forceinline__ void finish_item(const Params& p, const Item& it, float x_max, const float2& half_unscale,
                                            int item, int warp, const MomentSlots& slots, float (&acc)[kRows][2][4]) {
  const int slot = item % Traits::kMomentSlots;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  Moments<float> moments[2] = {};
  if (!(x_max <= kHalfMax) || !(x_max >= kHalfSmallest)) {
    // Some |x| beyond fp16's range, or all of them too small for its precision: recompute the
    // warp tile with TF32 operands read from x itself.
    if (it.active) {
      init_accumulators(p.sample_bias + it.n * kCout, acc);
      for (int ci = 0; ci < p.cin; ++ci)
        accumulate_channel_tf32<kFallback>(p, channel_slab(p, it, ci), ci, p.x_pivots[it.n * p.cin + ci], it.tile, acc);
      warp_tile_moments(it.tile, half_unscale, false, acc, moments);
    }
  } else if (it.active) {
    warp_tile_moments(it.tile, half_unscale, true, acc, moments);
  }
  if (t == 0) {
    slots.warp_moments[slot][warp][g] = moments[0];
    slots.warp_moments[slot][warp][g + 8] = moments[1];
  }
  slots.written.arrive(item);
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
  ptx::BarrierRing<Traits::kStages> landed;     // step s: s % kStages
  ptx::BarrierRing<Traits::kPacked> converted;  // step s: s % kPacked
  ptx::BarrierRing<Traits::kPacked> drained;    // step s: s % kPacked
  unsigned (*x_max)[Traits::kProducerWarps];
};

// A group's items: item group_index, group_index + groups, ... (groups = gridDim.x * kGroups, and
// group_index = blockIdx.x + group * gridDim.x, so small batches spread over SMs first).
__device__ __forceinline__ int first_item(int group) { return static_cast<int>(blockIdx.x + group * gridDim.x); }
__device__ __forceinline__ int item_stride() { return static_cast<int>(gridDim.x * Traits::kGroups); }

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
__device__ __forceinline__ void stage_and_advance(const Params& p, const GroupPipeline& pipe, StagingCursor& c,
                                                  const ItemCoords& stride, int step, bool bulk, int thread) {
  if (c.valid)
    stage_channel(p, pipe.stages + (step % Traits::kStages) * p.stage_floats, c.it, c.ci, bulk, thread,
                  pipe.landed.slot(step));
  ptx::cp_async_commit();
  if (++c.ci < p.cin) return;
  c.ci = 0;
  c.coords = next_item(p, c.coords, stride);
  c.valid = c.coords.n < p.batch;
  if (c.valid) c.it = describe_item(p, c.coords, WarpPlace{0, 0});
}

// Producer warps: stage step s + kStages - 1 by bulk copies while converting step s into the
// converted stage the MMA warps drained kPacked steps ago; an fp32 stage is refilled only after all
// producers of the group have converted it (named barrier).
__device__ __forceinline__ void produce_items(const Params& p, int group, int thread, const GroupPipeline& pipe) {
  if (first_item(group) >= p.items) return;
  const int pack_quad = thread % p.pack_quads;
  const int pack_row0 = thread / p.pack_quads;  // >= pack_row_step: no share of the conversion
  const bool bulk = p.copy16;                   // 16-byte aligned runs
  const ItemCoords stride = item_coords(p, item_stride());
  ItemCoords coords = item_coords(p, first_item(group));
  Item it = describe_item(p, coords, WarpPlace{0, 0});
  StagingCursor staging{coords, it, 0, true};
  for (int ahead = 0; ahead < Traits::kStages - 1; ++ahead) stage_and_advance(p, pipe, staging, stride, ahead, bulk, thread);
  int step = 0;
  while (true) {
    for (int ci = 0; ci < p.cin; ++ci, ++step) {
      // The fp32 stage being filled was last read by the conversion in step - 1 (then the barrier).
      stage_and_advance(p, pipe, staging, stride, step + Traits::kStages - 1, bulk, thread);
      ptx::cp_async_wait<Traits::kStages - 1>();
      if (bulk)
        pipe.landed.wait(step);
      else
        ptx::named_barrier(Traits::kProducerBarrier + group, Traits::kProducerThreads);  // every producer's cp.async landed
      const int b = step % Traits::kPacked;
      pipe.drained.wait_previous(step);  // the MMA warps are done with the stage's previous step
      const float* current = pipe.stages + (step % Traits::kStages) * p.stage_floats;
      float x_max = 0.f;
      if (pack_row0 < p.pack_row_step)
        x_max = convert_channel(p, current, pipe.packed + b * p.packed_entries, it.slab_rows, pack_quad, pack_row0,
                                p.x_pivots[it.n * p.cin + ci]);
      const unsigned warp_max = __reduce_max_sync(0xffffffffu, __float_as_uint(x_max));
      if (thread % 32 == 0) pipe.x_max[b][thread / 32] = warp_max;
      pipe.converted.arrive(step);
      ptx::named_barrier(Traits::kProducerBarrier + group, Traits::kProducerThreads);  // the fp32 stage may be refilled
    }
    coords = next_item(p, coords, stride);
    if (coords.n >= p.batch) break;
    it = describe_item(p, coords, WarpPlace{0, 0});
  }
}

// MMA warps: for each (item, channel) step, wait for its converted stage, run the warp tile's
// MMAs, release the stage; at an item's end, its moments (finish_item). `warp`: within the group.
template <Operands kFast, Operands kFallback>
__device__ __forceinline__ void consume_items(const Params& p, int group, int warp, const GroupPipeline& pipe,
                                              const MomentSlots& slots) {
  if (first_item(group) >= p.items) return;
  const WarpPlace place{warp / p.col_tiles, warp % p.col_tiles};
  const ItemCoords stride = item_coords(p, item_stride());
  ItemCoords coords = item_coords(p, first_item(group));
  const int g = (threadIdx.x % 32) / 4;
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
  int pending_item = 0;
  for (int item = 0;; ++item) {
    // The sample's bias of channels g and g + 8 (scaled as the fp16 accumulators are), for the
    // item's first MMAs; loaded before the first stage's wait, which hides its latency.
    const float* sample_bias = p.sample_half_bias + it.n * kCout;
    const float2 bias{sample_bias[g], sample_bias[g + 8]};
    unsigned x_max = 0;
    for (int ci = 0; ci < p.cin; ++ci, ++step) {
      const int b = step % Traits::kPacked;
      const ChannelWeights<kFast> weights = load_channel_weights<kFast>(p, ci);
      pipe.converted.wait(step);
#pragma unroll
      for (int w = 0; w < Traits::kProducerWarps; ++w) x_max = max(x_max, pipe.x_max[b][w]);
      const uint2* packed = pipe.packed + b * p.packed_entries;
      if (it.active) {
        if (ci == 0)
          accumulate_channel_half<kFast, true>(p, packed, weights, it.tile, bias, acc);
        else
          accumulate_channel_half<kFast, false>(p, packed, weights, it.tile, bias, acc);
      }
      pipe.drained.arrive(step);
    }
    finish_item<kFallback>(p, it, __uint_as_float(x_max), half_unscale, item, warp, slots, acc);
    if (pending_partial >= 0) merge_item(p, slots, pending_item, pending_partial);
    pending_partial = -1;
    if (item % Traits::kWarps == warp) {
      pending_partial = static_cast<long long>(it.n) * p.tiles + it.tile_index;
      pending_item = item;
    }
    coords = next_item(p, coords, stride);
    if (coords.n >= p.batch) break;
    it = describe_item(p, coords, place);
  }
  if (pending_partial >= 0) merge_item(p, slots, pending_item, pending_partial);
}

// B = 1: the GroupNorm-mean epilogue at the end of this kernel, by the MMA warps of the block that
// finishes last, instead of by a second kernel. B = 1's time followed the host's (9-22 us per call
// for checks, allocations and two launches, against 10-13 us of moments kernel); with one launch
// fewer its medians were 14-18 us in nine runs, against 13-22 us (H100).
// The threadFenceReduction pattern: every MMA thread fences its writes (the merged partials) before
// its block counts itself done, and the last block fences again before it reads them.
__device__ __forceinline__ void epilogue_in_last_block(const Params& p) {
  __shared__ bool last;
  __threadfence();
  ptx::named_barrier(Traits::kMmaBarrier, Traits::kMmaWarpsPerBlock * 32);
  if (threadIdx.x == 0) last = atomicAdd(p.done_blocks, 1u) == gridDim.x - 1;
  ptx::named_barrier(Traits::kMmaBarrier, Traits::kMmaWarpsPerBlock * 32);
  if (!last) return;
  __threadfence();
  // A warp per (sample, group), its lanes over the group's channels and the tiles (moments.h): a
  // group of the 16 channels has 1, 2, 4, 8 or 16.
  const long long groups = p.epilogue.batch * p.epilogue.groups;
  for (long long i = threadIdx.x / 32; i < groups; i += Traits::kMmaWarpsPerBlock)
    with_epilogue_form<kCout, false>(kCout / p.epilogue.groups,
                                     [&](auto form) { groupnorm_mean_epilogue_group<decltype(form)::value>(p.epilogue, i); });
  if (threadIdx.x == 0) *p.done_blocks = 0;  // for the next launch on this stream
}

// A persistent grid of one block per SM, each running kGroups independent item streams; within a
// group, producer warps and MMA warps hand converted stages over through mbarriers, so conversion
// and staging overlap the MMAs instead of alternating with them at block barriers.
template <Operands kFast, Operands kFallback>
__global__ void __launch_bounds__(Traits::kThreads, 1) conv_k4_mma_moments_kernel(Params p) {
  static_assert(is_half(kFast) && !is_half(kFallback), "fp16 fast path, TF32 fallback");
  // The epilogue (launched as a programmatic dependent) may be scheduled now; it waits for this
  // grid's completion before reading anything.
  ptx::launch_dependents();
  extern __shared__ float4 smem_vec[];
  __shared__ uint64_t landed[Traits::kGroups][Traits::kStages], converted[Traits::kGroups][Traits::kPacked], drained[Traits::kGroups][Traits::kPacked];
  __shared__ unsigned x_max[Traits::kGroups][Traits::kPacked][Traits::kProducerWarps];
  __shared__ Moments<float> warp_moments[Traits::kGroups][Traits::kMomentSlots][Traits::kWarps][kCout];
  __shared__ uint64_t written[Traits::kGroups][Traits::kMomentSlots];
  if (threadIdx.x == 0) {
    for (int q = 0; q < Traits::kGroups; ++q) {
      for (int b = 0; b < Traits::kStages; ++b) ptx::mbarrier_init(ptx::shared_address(&landed[q][b]), 1);
      for (int b = 0; b < Traits::kPacked; ++b) {
        ptx::mbarrier_init(ptx::shared_address(&converted[q][b]), Traits::kProducerThreads);
        ptx::mbarrier_init(ptx::shared_address(&drained[q][b]), Traits::kMmaThreads);
      }
      for (int slot = 0; slot < Traits::kMomentSlots; ++slot) ptx::mbarrier_init(ptx::shared_address(&written[q][slot]), Traits::kMmaThreads);
    }
  }
  ptx::wait_for_prerequisite_grid();  // the sample terms (k4_sample_terms.cu) are written
  __syncthreads();
  const int warp = threadIdx.x / 32;
  const bool producer = warp >= Traits::kMmaWarpsPerBlock;
  const int group = producer ? (warp - Traits::kMmaWarpsPerBlock) / Traits::kProducerWarps : warp / Traits::kWarps;
  // Group q's shared memory: kStages fp32 stages, then kPacked converted stages (16-byte aligned:
  // stage_floats and packed_entries are multiples of 4).
  float* base = reinterpret_cast<float*>(smem_vec) + group * (Traits::kStages * p.stage_floats + 2 * Traits::kPacked * p.packed_entries);
  const GroupPipeline pipe{base,
                           reinterpret_cast<uint2*>(base + Traits::kStages * p.stage_floats),
                           {ptx::shared_address(landed[group])},
                           {ptx::shared_address(converted[group])},
                           {ptx::shared_address(drained[group])},
                           x_max[group]};
  if (producer) {
    ptx::release_registers<Traits::kProducerRegisters>();
    produce_items(p, group, threadIdx.x - Traits::kMmaWarpsPerBlock * 32 - group * Traits::kProducerThreads, pipe);
  } else {
    ptx::claim_registers<Traits::kMmaRegisters>();
    consume_items<kFast, kFallback>(p, group, warp - group * Traits::kWarps, pipe, MomentSlots{warp_moments[group], {ptx::shared_address(written[group])}});
    if (p.done_blocks != nullptr) epilogue_in_last_block(p);
  }
}


// ------------------------------------------------------------------------------------------------
// Kernel launchers

namespace {

struct Geometry {
  int oh, ow, row_tiles, col_tiles, band_row_tiles, bands;
};

Geometry geometry(const at::Tensor& x) {
  Geometry g{};
  g.oh = static_cast<int>(x.size(3)) - kKernel + 1;
  g.ow = static_cast<int>(x.size(4)) - kKernel + 1;
  g.row_tiles = (g.oh + kRows - 1) / kRows;
  g.col_tiles = (g.ow + kCols - 1) / kCols;
  g.band_row_tiles = std::max(1, std::min(g.row_tiles, Traits::kWarps / std::max(1, g.col_tiles)));
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

// Per group: kStages fp32 stages, then kPacked converted stages of slab rows x packed_row entries.
size_t shared_bytes(const at::Tensor& x) {
  return Traits::kGroups *
         (sizeof(float) * Traits::kStages * stage_floats(x) + sizeof(uint2) * Traits::kPacked * slab_rows(x) * packed_row(x));
}

bool can_run(const FusedLayer& l, const at::Tensor& x, Precision precision) {
  const auto k = l.kernel();
  if (!(k[0] == kKernel && k[1] == kKernel && k[2] == kKernel && l.out_channels() == kCout &&
        is_plain_float32_conv(l) && unsupported_reason(l).empty() && x.dim() == 5 &&
        x.scalar_type() == at::kFloat))
    return false;
  if (device_code(x.get_device()).arch < 900) return false;  // mbarrier transactions, bulk copies
  const Geometry g = geometry(x);
  const int64_t positions = (x.size(2) - kKernel + 1) * static_cast<int64_t>(g.oh) * g.ow;
  if (precision == Precision::kAccurate && positions < kAccurateMinPositions) return false;
  return g.oh >= kRows && g.ow >= kCols && g.col_tiles <= Traits::kWarps && x.size(4) <= Traits::kMaxWidth &&
         shared_bytes(x) <= static_cast<size_t>(kMaxDynamicSharedBytes);
}

int tiles(const at::Tensor& x) { return static_cast<int>(x.size(2) - kKernel + 1) * geometry(x).bands; }

bool runs_epilogue(int64_t batch) { return batch <= Traits::kRunsEpilogueMaxBatch; }

void launch(const at::Tensor& x, const TensorcoreWeights& packed, const SampleTerms& terms, const Plan& plan,
            at::Tensor& partials, const EpilogueParams* epilogue, cudaStream_t stream) {
  const Geometry g = geometry(x);
  Params p{};
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
  p.tiles = plan.tiles;
  p.batch = static_cast<int>(x.size(0));
  TORCH_CHECK(x.size(0) * static_cast<long long>(plan.tiles) < std::numeric_limits<int>::max(), "fused3d: batch ",
              x.size(0), " has more work items than 32-bit indices reach");
  p.items = static_cast<int>(x.size(0) * plan.tiles);
  p.stage_floats = stage_floats(x);
  p.packed_row = packed_row(x);
  p.pack_quads = p.packed_row / 4;
  p.packed_entries = slab_rows(x) * p.packed_row;
  p.pack_row_step = Traits::kProducerThreads / p.pack_quads;  // >= 1: W <= kMaxWidth (can_run)
  p.copy16 = p.w % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0;
  p.half_w = reinterpret_cast<const uint4*>(packed.half_fragments.data_ptr<at::Half>());
  p.tf32_w = reinterpret_cast<const float4*>(packed.tf32_fragments.data_ptr<float>());
  p.x_pivots = terms.pivots;
  p.sample_half_bias = terms.half_bias;
  p.half_unscale = packed.half_unscale.data_ptr<float>();
  p.sample_bias = terms.bias;
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  if (epilogue != nullptr) {
    p.epilogue = *epilogue;
    p.done_blocks = done_counter(x.get_device(), stream);
  }
  const auto run = [&](auto kernel) {
    // Each block runs kGroups item streams; a small batch takes one stream per SM first.
    const unsigned blocks = persistent_blocks(kernel, Traits::kThreads, plan.shared_bytes, kMaxDynamicSharedBytes,
                                              p.items, x.get_device());
    // A programmatic dependent of the sample-terms kernel (k4_sample_terms.cu): its set-up overlaps
    // that kernel's end, and it waits for the terms before any role reads them.
    launch_dependent(kernel, dim3(blocks), dim3(Traits::kThreads), plan.shared_bytes, stream, p);
  };
  if (packed.parts == 2)
    run(conv_k4_mma_moments_kernel<Operands::kHalfSplit, Operands::kTf32Split>);
  else
    run(conv_k4_mma_moments_kernel<Operands::kHalf, Operands::kTf32>);
}

}  // namespace fused3d::k4_mma
