// The wgmma planes kernel: conv3d of the standard layer's shape (kernel 4x4x4, 16 output channels,
// 3 input channels, 32 x 32 input planes) -> bias -> hardswish -> per-(sample, channel) moments, on
// tensor cores through wgmma (sm_90a), both precision modes. The GroupNorm-mean epilogue follows in
// epilogue.cu. OPTIMIZATION.md 4.4 explains the design and its measured choices; from B =
// kMinBatch on it takes the standard layer from the mma.sync kernel (B = 1024, H200: accurate 0.418
// -> 0.302 ms, tf32 0.293 -> 0.245).
//
// GEMM per input row r of a warp's 16-column strip of output plane od:
//   D_r = sum over ci, part of A(ci, r) x W(ci, part),  W = [W(kh 0) | ... | W(kh 3)]  (K 16 x N 64)
// K = (kd, kw) as in the mma.sync kernel (k = 8*pp + 2*kw + kdl, kd = 2*pp + kdl), N = 16*kh +
// channel, one m64n64k16 per channel and weight part (the accurate mode's hi and lo: twice the
// MMAs). Output row j = bias + sum over kh of D_(j+kh)'s kh columns. Those 16 columns have the lane
// layout of an m16n16 accumulator: lane (g, t) holds positions g and g + 8 (cls) of channels 2t,
// 2t + 1, 8 + 2t, 9 + 2t (c), D element 8*kh + 4*(c / 2) + 2*cls + c % 2. So a warp keeps a rolling
// window of four output rows (8 FADDs per lane and kh per input row) and takes each row's
// statistics as soon as it is complete (4 FP32 instructions per value, as warp_tile_moments).
//
// A's registers are pairs {x[plane p], x[plane p + 1]} (kdl = 0, 1) at one row and column: the pair
// plane P_p, fp16. Output plane od reads P_od (pp = 0) and P_(od+2) (pp = 1). So a sample's OD
// output planes read its OD + 2 pair planes, each converted once and read by two output planes,
// made from its OD + 3 input planes, each copied once (one 4 KB bulk copy per channel). Copying each
// output plane's 4 input planes and converting them afresh, as the mma.sync kernel does, is 4x the
// copies and twice the conversions, and that producer work is what held a wgmma kernel back.
//
// Block: one producer warpgroup walks the block's share of the batch's output planes (block_planes,
// conv3d_k4_planes.h) plane by plane: bulk copies kInputRing input planes ahead, converts pair
// plane q (with the fp16 range check) into ring slot q % kPairRing once the output planes that read
// the slot's previous pair plane are done. kConsumerWarpgroups consumer warpgroups take the block's
// output planes two at a time (item k: planes 2k and 2k + 1 of the block's stream), warp w on strip
// w % 2 of plane 2k + w / 2; each warp streams the whole strip's kPlaneSide input rows (the
// standard layer's 29 output rows from 32: 10% of the wgmmas complete no output row). Each warp
// writes its own Moments per channel: tiles per sample = OD x 2. An item whose pair planes leave
// fp16's range takes the TF32 route (tensorcore_common.h), per warp, from x.
//
// Limits (else the mma.sync kernel): Cin 3, H = W = kPlaneSide, OD >= kMinDepth, 16-byte aligned x,
// B >= kMinBatch, code compiled for sm_90a (device_code.h) on a Hopper GPU.
#include "conv3d_k4_planes.h"

#include "device_code.h"
#include "persistent_grid.h"
#include "ptx.h"
#include "tensorcore_common.h"
#include "wgmma.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <limits>
#include <mutex>

namespace fused3d::k4_planes {

using namespace k4;

struct Traits {
  static constexpr int kCin = 3;         // unrolled: the channels of an input row are one wgmma chain
  static constexpr int kPlaneSide = 32;  // H = W: rows and row strides are constants of the unrolled loop
  static constexpr int kPlaneEntries = kPlaneSide * kPlaneSide;
  static constexpr int kPlaneOutRows = kPlaneSide - kKernel + 1;
  static constexpr int kN = kKernel * kCout;  // the wgmma N: the four kernel rows' 16 channels
  static constexpr int kConsumerWarpgroups = 3;
  static constexpr int kConsumerWarps = kConsumerWarpgroups * kWarpsPerWarpgroup;
  static constexpr int kProducerThreads = kWarpsPerWarpgroup * 32;  // one producer warpgroup
  static constexpr int kProducerWarps = kProducerThreads / 32;
  static constexpr int kThreads = kConsumerWarps * 32 + kProducerThreads;
  static constexpr int kInputRing = 4;  // input planes (all channels, fp32) landed or in flight
  // Pair planes. A warpgroup's next item reads pair planes up to 2 * kConsumerWarpgroups + 2 beyond
  // its previous item's last (6 output planes on, and 2 more where they cross a sample's end: with
  // OD >= kMinDepth at most one). The ring exceeds that, so no consumer waits on a slot that has yet
  // to take its previous pair plane (whose phase parity would pass the wait). 13 pair and 3 input
  // planes were 1-2% slower (H200).
  static constexpr int kPairRing = 10;
  static constexpr int kMinDepth = 6;
  // Items. The producer waits for item k before it writes pair plane 2k + 5 + kPairRing at the
  // latest, and item k + kDoneRing reads pair planes from 2k + 2 * kDoneRing on: so no item finishes
  // on a done barrier whose previous phase the producer has yet to wait for.
  static constexpr int kDoneRing = 16;
  static constexpr int kTileBytes = kPlanesTileHalves * 2;  // one B tile: K 16 x N 64, fp16
  // From B = 64 on it beats the mma.sync kernel (H100, accurate / tf32: B = 64 0.039 / 0.034 ms
  // against 0.044 / 0.035; B = 333 0.109 / 0.092 against 0.142 / 0.103). Smaller batches, B = 1
  // above all, keep the mma.sync kernel, which spreads a sample over the GPU and runs the epilogue
  // itself.
  static constexpr int64_t kMinBatch = 64;
  // Registers (setmaxnreg from 128 each): the consumers' unrolled loop has 519 spill instructions at
  // 128, 5 at 144; a producer thread keeps all 12 of its 16-byte loads of a pair plane in flight
  // (with two at a time, ~3,000 cycles per pair plane and tf32 0.283 ms; all of them: 0.243; H200).
  static constexpr int kConsumerRegisters = 144;
  static constexpr int kProducerRegisters = 80;
  // Named barrier (0 is __syncthreads): the producer warpgroup's.
  static constexpr int kProducerBarrier = 1;

  static_assert(kThreads * 128 == kRegistersPerSm, "one block per SM at 128 registers per thread on entry");
  static_assert(kConsumerWarps * 32 * kConsumerRegisters + kProducerThreads * kProducerRegisters <= kRegistersPerSm,
                "the reallocated registers fit the register file");
  static_assert(kPairRing > 2 * kConsumerWarpgroups + 2, "a warpgroup's next item stays within the pair ring");
  static_assert(2 * kDoneRing > kPairRing + 5, "the producer waits for an item before its done barrier turns over");
  static_assert(kPlaneEntries % (4 * kProducerThreads) == 0, "the conversion's 4-entry groups split evenly");
};

// The kernel's shared memory: kInputRing input planes, kPairRing pair planes, the B tiles.
constexpr size_t shared_bytes_for(int parts) {
  return (Traits::kInputRing + Traits::kPairRing) * Traits::kCin * Traits::kPlaneEntries * sizeof(float) +
         Traits::kCin * parts * Traits::kTileBytes;
}
static_assert(shared_bytes_for(2) <= kMaxDynamicSharedBytes, "the rings and tiles fit");

struct Params {
  const float* x;           // (B, 3, D, 32, 32), contiguous
  long long sample_stride;  // Cin*D*H*W
  int cin, d, h, w;
  int oh, ow;   // output rows and columns: the second strip starts at ow - 16
  int batch;
  int planes;   // output planes of the batch, B * ods, which the blocks share out (block_planes)
  int ods;      // output planes per sample
  int tiles;    // partial-moment tiles per sample: ods * 2
  const float4* tf32_w;       // TF32 route: (Cin, 4 kd, 2 kh pairs, parts, 32 lanes) A fragments
  const uint4* wgmma_tiles;   // (Cin, parts) B tiles of kTileBytes, copied to shared memory
  const float* x_pivots;          // (B, 3): taken off x before it is rounded (k4_sample_terms.h)
  const float* sample_half_bias;  // (B, 16): bias + the pivots' contribution, times the channel scale
  const float* sample_bias;       // (B, 16): bias + the pivots' contribution, for the TF32 route
  Moments<float>* partials;   // (B, tiles, 16)
  float half_unscale[kCout];  // 1 / channel scale: constants of the launch
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

// The block's shared state. Input plane s of the block's stream (numbered as block_planes says)
// lands in inputs[s % kInputRing] (all channels) and completes a phase of landed; pair plane q is
// written to pairs[q % kPairRing] and completes a phase of full (arrivals: every producer thread),
// with max|x| per producer warp in pair_max; item k's four warps arrive on done[k % kDoneRing] when
// they have read its pair planes.
struct PlanesShared {
  float* inputs;     // [kInputRing][kCin][kPlaneEntries]
  uint32_t* pairs;   // [kPairRing][kCin][kPlaneEntries]: half2 {plane p, plane p + 1}
  ptx::BarrierRing<Traits::kInputRing> landed;  // input plane s: s % kInputRing
  ptx::BarrierRing<Traits::kPairRing> full;     // pair plane q: q % kPairRing
  ptx::BarrierRing<Traits::kDoneRing> done;     // item k: k % kDoneRing
  unsigned (*pair_max)[Traits::kProducerWarps];
};

// Producer thread 0: input plane `plane` of `sample`, every channel, into inputs[input % kInputRing]
// (`input`: its number along the block's stream).
__device__ __forceinline__ void copy_input_plane(const Params& p, const PlanesShared& s, int sample, int plane,
                                                 int input) {
  const float* src = p.x + static_cast<long long>(sample) * p.sample_stride + plane * Traits::kPlaneEntries;
  const int slot = input % Traits::kInputRing;
  const unsigned bar = s.landed.slot(input);
  constexpr unsigned kBytes = Traits::kPlaneEntries * sizeof(float);
  ptx::mbarrier_expect_bytes(bar, Traits::kCin * kBytes);
#pragma unroll
  for (int ci = 0; ci < Traits::kCin; ++ci)
    ptx::bulk_copy(s.inputs + (slot * Traits::kCin + ci) * Traits::kPlaneEntries, src + static_cast<long long>(ci) * p.d * Traits::kPlaneEntries,
              kBytes, bar);
}

// Producer thread 0's walk over the block's input planes, copying them in stream order.
struct CopyCursor {
  int seg, plane, input;  // next to copy: input plane `plane` of segment seg, number `input`
  Segment segment;
};
__device__ __forceinline__ void copy_next(const Params& p, const PlanesShared& s, const PlaneRange& r, CopyCursor& c) {
  copy_input_plane(p, s, c.segment.sample, c.plane, c.input);
  ++c.input;
  if (++c.plane < c.segment.e + kKernel - 1) return;
  c.segment = segment_of(p, r, ++c.seg);
  c.plane = c.segment.b;
}

// The producer warpgroup: the block's pair planes in stream order. users[slot]: the items that read
// the pair plane in that slot (-1: none), for the wait before the slot is written again.
__device__ __forceinline__ void produce_planes(const Params& p, int thread, const PlanesShared& s,
                                               int (*users)[2]) {
  const PlaneRange r = block_planes(p, blockIdx.x, gridDim.x);
  const int segments = segment_count(p, r);
  const int inputs = r.count + (kKernel - 1) * segments;
  CopyCursor copies{0, 0, 0, segment_of(p, r, 0)};
  copies.plane = copies.segment.b;
  if (thread == 0)
    while (copies.input < min(Traits::kInputRing, inputs)) copy_next(p, s, r, copies);
  int q = 0;
  for (int seg = 0; seg < segments; ++seg) {
    const Segment segment = segment_of(p, r, seg);
    float x_pivot[Traits::kCin];  // the sample's, taken off x before rounding (k4_sample_terms.h)
#pragma unroll
    for (int ci = 0; ci < Traits::kCin; ++ci) x_pivot[ci] = p.x_pivots[segment.sample * Traits::kCin + ci];
    for (int plane = segment.b; plane <= segment.e + 1; ++plane, ++q) {
      const int at = segment.sample * p.ods + plane - r.start;  // output plane `plane` in the stream
      const int first_input = at + 3 * seg;
      const int slot = q % Traits::kPairRing;
      if (q >= Traits::kPairRing) {
        // The slot's previous pair plane: wait for the items that read it.
#pragma unroll
        for (int u = 0; u < 2; ++u)
          if (users[slot][u] >= 0) s.done.wait(users[slot][u]);
      }
      s.landed.wait(first_input);
      s.landed.wait(first_input + 1);
      const float* low = s.inputs + (first_input % Traits::kInputRing) * Traits::kCin * Traits::kPlaneEntries;
      const float* high = s.inputs + ((first_input + 1) % Traits::kInputRing) * Traits::kCin * Traits::kPlaneEntries;
      uint32_t* pair = s.pairs + slot * Traits::kCin * Traits::kPlaneEntries;
      // All loads first: the conversion is latency-bound on shared loads that queue behind the
      // consumers' (~3,000 cycles per pair plane with two groups of loads in flight, H200).
      constexpr int kLoads = Traits::kCin * Traits::kPlaneEntries / (4 * Traits::kProducerThreads);
      constexpr int kLoadsPerChannel = Traits::kPlaneEntries / (4 * Traits::kProducerThreads);
      float4 x0[kLoads], x1[kLoads];
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int e = 4 * (thread + i * Traits::kProducerThreads);
        x0[i] = *reinterpret_cast<const float4*>(low + e);
        x1[i] = *reinterpret_cast<const float4*>(high + e);
      }
      const auto shift = [](float4& v, float by) {
        v.x -= by;
        v.y -= by;
        v.z -= by;
        v.w -= by;
      };
      float m = 0.f;
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        shift(x0[i], x_pivot[i / kLoadsPerChannel]);  // load i is of channel i / kLoadsPerChannel
        shift(x1[i], x_pivot[i / kLoadsPerChannel]);
        m = fmaxf(m, fmaxf(fmaxf(fabsf(x0[i].x), fabsf(x0[i].y)), fmaxf(fabsf(x0[i].z), fabsf(x0[i].w))));
        m = fmaxf(m, fmaxf(fmaxf(fabsf(x1[i].x), fabsf(x1[i].y)), fmaxf(fabsf(x1[i].z), fabsf(x1[i].w))));
        *reinterpret_cast<uint4*>(pair + 4 * (thread + i * Traits::kProducerThreads)) =
            make_uint4(half_pair(x0[i].x, x1[i].x), half_pair(x0[i].y, x1[i].y), half_pair(x0[i].z, x1[i].z),
                       half_pair(x0[i].w, x1[i].w));
      }
      const unsigned warp_max = __reduce_max_sync(0xffffffffu, __float_as_uint(m));
      if (thread % 32 == 0) s.pair_max[slot][thread / 32] = warp_max;
      s.full.arrive(q);
      // Every producer thread is past its waits on users[slot] and its reads of input plane
      // first_input, which is read for the last time here (and first_input + 1 too at the segment's
      // last pair plane).
      ptx::named_barrier(Traits::kProducerBarrier, Traits::kProducerThreads);
      if (thread == 0) {
        // Output planes `plane` (pp = 0) and plane - 2 (pp = 1) read this pair plane, if in the segment.
        users[slot][0] = plane < segment.e ? at / 2 : -1;
        users[slot][1] = plane - 2 >= segment.b ? (at - 2) / 2 : -1;
        const int finished = first_input + (plane == segment.e + 1 ? 2 : 1);
        while (copies.input < min(finished + Traits::kInputRing, inputs)) copy_next(p, s, r, copies);
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
  constexpr uint64_t kTileStep = Traits::kTileBytes >> 4;  // descriptor units
  float gate_scale[4], pivot[4] = {}, sum[4][2] = {}, squares[4][2] = {};
#pragma unroll
  for (int c = 0; c < 4; ++c) gate_scale[c] = unscale[c] * (1.0f / 6.0f);  // exact: a power of two
  const auto at = [](int c, int cls) { return 4 * (c / 2) + 2 * cls + c % 2; };
  // Two Ds alternating by row: with one, ptxas moved the adds that read D_r past the wgmmas of the
  // next rows, which overwrite it (found with masked weights).
  float dd[2][32], out[kKernel][8];
#pragma unroll
  for (int r = 0; r < Traits::kPlaneSide; ++r) {
    float(&d)[32] = dd[r % 2];
    uint32_t a[Traits::kCin][4];
#pragma unroll
    for (int ci = 0; ci < Traits::kCin; ++ci) {
      const int offset = ci * Traits::kPlaneEntries + r * Traits::kPlaneSide;
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
    for (int ci = 0; ci < Traits::kCin; ++ci)
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
        pivot[c] = __shfl_sync(0xffffffffu, v * hardswish_gate_scaled(v, gate_scale[c]), t);
      }
    }
#pragma unroll
    for (int c = 0; c < 4; ++c)
#pragma unroll
      for (int cls = 0; cls < 2; ++cls) {
        const float v = row[at(c, cls)];
        const float dv = fmaf(v, hardswish_gate_scaled(v, gate_scale[c]), -pivot[c]);
        sum[c][cls] += dv;
        squares[c][cls] = fmaf(dv, dv, squares[c][cls]);
      }
  }
  const float count = static_cast<float>(Traits::kPlaneOutRows * (kCols - dup_cols));
  const bool kept[2] = {g >= dup_cols, g + 8 >= dup_cols};  // column col0 + g + 8 * cls
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const float s = (kept[0] ? sum[c][0] : 0.f) + (kept[1] ? sum[c][1] : 0.f);
    const float q = (kept[0] ? squares[c][0] : 0.f) + (kept[1] ? squares[c][1] : 0.f);
    moments[c] = lanes_to_moments<4, 32>(s, q, count, pivot[c], unscale[c]);  // lanes t, t + 4, ...
  }
}

// The TF32 route for one warp's strip (x - x_pivot beyond fp16's range): the mma.sync kernel's
// 10-row tiles straight from x, the last shifted back; moments of channels g and g + 8 in lanes
// t = 0.
template <Operands kFallback>
__device__ __forceinline__ void plane_fallback(const Params& p, int n, int od, int col0, int dup_cols,
                                               Moments<float> (&moments)[2]) {
  const float* sample = p.x + static_cast<long long>(n) * p.sample_stride;
#pragma unroll 1
  for (int t = 0; t * kRows < Traits::kPlaneOutRows; ++t) {
    const int row0 = tile_origin(t, Traits::kPlaneOutRows, kRows);
    const WarpTile tile{row0, col0, t * kRows - row0, dup_cols};
    float acc[kRows][2][4];
    init_accumulators(p.sample_bias + n * kCout, acc);
    for (int ci = 0; ci < Traits::kCin; ++ci)
      accumulate_channel_tf32<kFallback>(p, channel_slab(p, sample, od, 0, ci), ci, p.x_pivots[n * Traits::kCin + ci],
                                         tile, acc);
    Moments<float> tile_moments[2];
    warp_tile_moments(tile, float2{1.f, 1.f}, false, acc, tile_moments);
    moments[0] = merge_moments(moments[0], tile_moments[0]);
    moments[1] = merge_moments(moments[1], tile_moments[1]);
  }
}

// A consumer warpgroup: items wg, wg + kConsumerWarpgroups, ... of the block's stream of output
// planes, two per item (the last item's second warp pair repeats the first plane if the stream
// has an odd count, and writes nothing).
template <Operands kFallback>
__device__ __forceinline__ void consume_planes(const Params& p, int wg, const PlanesShared& s, uint64_t tiles) {
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int w = (threadIdx.x / 32) % kWarpsPerWarpgroup;
  const int strip = w % 2;
  const int col0 = strip == 1 ? p.ow - kCols : 0, dup_cols = strip == 1 ? 2 * kCols - p.ow : 0;
  const int lane_channels[4] = {2 * t, 2 * t + 1, 8 + 2 * t, 9 + 2 * t};
  float unscale[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) unscale[c] = p.half_unscale[lane_channels[c]];
  const PlaneRange r = block_planes(p, blockIdx.x, gridDim.x);
  // Output plane `at` of the block's stream: its sample and depth, and its pp = 0 pair plane.
  const auto locate = [r, ods = p.ods](int at, int& n, int& od, int& pair) {
    n = (r.start + at) / ods;
    od = r.start + at - n * ods;
    pair = at + 2 * (n - r.first_sample);
  };
  for (int k = wg; 2 * k < r.count; k += Traits::kConsumerWarpgroups) {
    const bool writes = 2 * k + w / 2 < r.count;
    int n, od, q;
    locate(writes ? 2 * k + w / 2 : 2 * k, n, od, q);
    // The sample's bias of the lane's channels (scaled as the fp16 accumulators are), loaded before
    // the waits below, which hide its latency.
    float bias[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) bias[c] = p.sample_half_bias[n * kCout + lane_channels[c]];
    // Both planes' pair planes, so that all four warps take the same route (wgmma is collective).
    unsigned x_max_bits = 0;
    for (int h = 0; h < 2; ++h) {
      int hn, hod, hq;
      locate(min(2 * k + h, r.count - 1), hn, hod, hq);
      for (int pp = 0; pp < 2; ++pp) {
        s.full.wait(hq + 2 * pp);
#pragma unroll
        for (int pw = 0; pw < Traits::kProducerWarps; ++pw)
          x_max_bits = max(x_max_bits, s.pair_max[(hq + 2 * pp) % Traits::kPairRing][pw]);
      }
    }
    const float x_max = __uint_as_float(x_max_bits);
    Moments<float>* partial = p.partials + (static_cast<long long>(n) * p.tiles + 2 * od + strip) * kCout;
    if (wgmma::kAvailable && x_max <= kHalfMax && x_max >= kHalfSmallest) {
      Moments<float> moments[4];
      stream_plane<weight_parts(kFallback)>(s.pairs + (q % Traits::kPairRing) * Traits::kCin * Traits::kPlaneEntries,
                   s.pairs + ((q + 2) % Traits::kPairRing) * Traits::kCin * Traits::kPlaneEntries, col0, dup_cols, tiles,
                   p.cin - Traits::kCin, bias, unscale, moments);
      __syncwarp();
      if (lane == 0) s.done.arrive(k);
      if (writes && g == 0) {
#pragma unroll
        for (int c = 0; c < 4; ++c) partial[lane_channels[c]] = moments[c];
      }
    } else {
      __syncwarp();  // every lane's reads of pair_max come before the release
      if (lane == 0) s.done.arrive(k);
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
__global__ void __launch_bounds__(Traits::kThreads, 1) conv_k4_planes_moments_kernel(Params p) {
  ptx::launch_dependents();  // the epilogue kernel may be scheduled now (epilogue.cu)
  extern __shared__ float4 smem_vec[];
  __shared__ uint64_t landed[Traits::kInputRing], full[Traits::kPairRing], done[Traits::kDoneRing];
  __shared__ unsigned pair_max[Traits::kPairRing][Traits::kProducerWarps];
  __shared__ int pair_users[Traits::kPairRing][2];
  if (threadIdx.x == 0) {
    for (int b = 0; b < Traits::kInputRing; ++b) ptx::mbarrier_init(ptx::shared_address(&landed[b]), 1);
    for (int b = 0; b < Traits::kPairRing; ++b) ptx::mbarrier_init(ptx::shared_address(&full[b]), Traits::kProducerThreads);
    for (int b = 0; b < Traits::kDoneRing; ++b) ptx::mbarrier_init(ptx::shared_address(&done[b]), kWarpsPerWarpgroup);  // a warp each
  }
  float* inputs = reinterpret_cast<float*>(smem_vec);
  uint32_t* pairs = reinterpret_cast<uint32_t*>(inputs + Traits::kInputRing * Traits::kCin * Traits::kPlaneEntries);
  uint4* tiles = reinterpret_cast<uint4*>(pairs + Traits::kPairRing * Traits::kCin * Traits::kPlaneEntries);
  constexpr int kTileVectors = Traits::kCin * weight_parts(kFallback) * Traits::kTileBytes / 16;
  for (int i = threadIdx.x; i < kTileVectors; i += Traits::kThreads) tiles[i] = __ldg(p.wgmma_tiles + i);
  ptx::fence_proxy_async();  // the tiles, visible to wgmma
  ptx::wait_for_prerequisite_grid();  // the sample terms (k4_sample_terms.cu) are written
  __syncthreads();
  const PlanesShared s{inputs, pairs, {ptx::shared_address(landed)}, {ptx::shared_address(full)},
                       {ptx::shared_address(done)}, pair_max};
  const int warp = threadIdx.x / 32;
  if (warp >= Traits::kConsumerWarps) {
    ptx::release_registers<Traits::kProducerRegisters>();
    produce_planes(p, threadIdx.x - Traits::kConsumerWarps * 32, s, pair_users);
  } else {
    ptx::claim_registers<Traits::kConsumerRegisters>();
    consume_planes<kFallback>(p, warp / kWarpsPerWarpgroup, s, wgmma::descriptor(ptx::shared_address(tiles)));
  }
}


// ------------------------------------------------------------------------------------------------
// Kernel launchers

bool can_run(const at::Tensor& x) {
  const bool hopper = at::cuda::getDeviceProperties(x.get_device())->major == 9;
  return hopper && x.size(0) >= Traits::kMinBatch && x.size(1) == Traits::kCin &&
         x.size(2) - kKernel + 1 >= Traits::kMinDepth && x.size(3) == Traits::kPlaneSide &&
         x.size(4) == Traits::kPlaneSide && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 &&
         device_code(x.get_device()).wgmma;
}

int tiles(const at::Tensor& x) { return static_cast<int>(x.size(2) - kKernel + 1) * 2; }

size_t shared_bytes(Precision precision) { return shared_bytes_for(precision == Precision::kAccurate ? 2 : 1); }

void launch(const at::Tensor& x, const TensorcoreWeights& packed, const SampleTerms& terms, const Plan& plan,
            at::Tensor& partials, cudaStream_t stream) {
  Params p{};
  p.x = x.data_ptr<float>();
  p.sample_stride = x.stride(0);
  p.cin = static_cast<int>(x.size(1));
  p.d = static_cast<int>(x.size(2));
  p.h = static_cast<int>(x.size(3));
  p.w = static_cast<int>(x.size(4));
  p.oh = p.h - kKernel + 1;
  p.ow = p.w - kKernel + 1;
  p.ods = p.d - kKernel + 1;
  p.tiles = plan.tiles;
  p.batch = static_cast<int>(x.size(0));
  p.tf32_w = reinterpret_cast<const float4*>(packed.tf32_fragments.data_ptr<float>());
  p.x_pivots = terms.pivots;
  p.sample_half_bias = terms.half_bias;
  p.sample_bias = terms.bias;
  for (int c = 0; c < kCout; ++c) p.half_unscale[c] = packed.half_unscale_host[c];
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  p.wgmma_tiles = reinterpret_cast<const uint4*>(packed.wgmma_tiles.data_ptr<at::Half>());
  TORCH_CHECK(x.size(0) * static_cast<long long>(plan.tiles) < std::numeric_limits<int>::max(), "fused3d: batch ",
              x.size(0), " has more partial tiles than 32-bit indices reach");
  p.planes = p.batch * p.ods;
  const auto run = [&](auto kernel) {
    const unsigned blocks =
        persistent_blocks(kernel, Traits::kThreads, plan.shared_bytes, kMaxDynamicSharedBytes, p.planes, x.get_device());
    // A programmatic dependent of the sample-terms kernel (k4_sample_terms.cu): its set-up overlaps
    // that kernel's end, and it waits for the terms before any role reads them.
    launch_dependent(kernel, dim3(blocks), dim3(Traits::kThreads), plan.shared_bytes, stream, p);
  };
  if (packed.parts == 2)
    run(conv_k4_planes_moments_kernel<Operands::kTf32Split>);
  else
    run(conv_k4_planes_moments_kernel<Operands::kTf32>);
}

}  // namespace fused3d::k4_planes
