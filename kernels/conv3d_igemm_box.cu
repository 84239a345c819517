// The box implicit-GEMM kernel: conv3d -> bias -> hardswish -> per-(sample, channel) moments on
// tensor cores (TF32 operands: wgmma m64nNk8 for blocks of 32 and 64 channels on sm_90a, mma.sync
// m16n8k8 otherwise) for float32 inputs, A read from each box's input
// footprint in shared memory. conv3d_igemm_box.h has the boxes, the footprint and the column order;
// the GEMM, the operands of the two modes and the statistics are the implicit-GEMM kernel's
// (conv3d_igemm.cu).
//
// Why a footprint: the implicit-GEMM kernel gathers A from global memory, one scalar load per
// element and tap (~6 instructions an element, ~10 with padding's bounds tests), and stores it to
// shared memory before the fragments load it back: with few output channels it is bound by those
// instructions, not by the MMAs. Here a box's footprints arrive by one tensor copy (TMA) per box and
// chunk, issued by one thread, with zeros where they leave the input, and a fragment element costs
// one shared load at a position's offset plus a column's (an add): no bounds tests, no table per
// element.
//
// A block of kThreads threads takes one sample, a tile of up to igemm::Traits::kMaxSteps boxes of
// kBoxPositions output positions, and one block of up to 64 output channels of one conv group. It
// walks (box, chunk) items: a chunk's footprints are copied into one of two buffers while the
// other's are multiplied (item i + 1's copy is issued with item i's first stage); W's slices
// of kBlockK columns arrive in stages of up to four slices (Traits::slices_per_stage), one bulk
// copy per part by thread 0 onto an mbarrier per buffer, one block barrier per stage, laid out as
// wgmma's B tiles (w_index); the buffers form a ring (Traits::w_buffers) so that wgmma's last
// steps of a stage stay in flight past its end. Per k8 step the block (one warpgroup) multiplies
// its two m64 tiles of positions by the block's channels with wgmma, A from registers loaded from
// the footprint and W through a descriptor; or each warp its 32 positions with mma.sync, as the
// implicit-GEMM kernel does. Without B fragment loads from shared memory and at wgmma's rate, 64
// channels run 1.15x (tf32) and 1.45x (accurate) faster than with mma.sync (Cin 32 -> 64, run
// 110); with 16, where A's loads are the cost, neither wins (Traits::uses_wgmma). A step's A loads
// are LDS [R + UR] (ptx::ld_shared): the column offsets come from the parameters at a step index
// all threads share; with the W copies on one thread this took the tf32 mode 1.05x-1.38x faster
// over the suite's box layers (run 112). After a
// box's last chunk its accumulators (started from the bias) get hardswish and join each thread's
// running (count, mean, M2) per channel for the positions inside the output; the block then merges
// lanes and warps in a fixed order and writes one Moments per channel of its tile: no atomics,
// bitwise deterministic.
//
// Limits (can_run): float32 x on sm_90 on (tensor copies); W a multiple of 4 (the tensor map's
// strides are whole 16-byte pieces); a footprint of at most 256 per axis (a copy's box) and two
// chunks' footprints within kMaxSharedBytes.
#include "conv3d_igemm_box.h"

#include "device_code.h"
#include "moments.h"
#include "ptx.h"
#include "wgmma.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace fused3d::igemm_box {

using GemmTraits = igemm::Traits;

struct Params {
  const float* w_hi;  // (G * blocks, chunks * taps_padded * chunk, N)
  const float* w_lo;  // the same, lo parts (split products only)
  const float* bias;  // (G * blocks, N)
  Moments<float>* partials;
  int conv_groups;
  int cout, cout_per_group, blocks;  // blocks: channel blocks per conv group
  int tiles, steps;                  // tiles per sample, boxes per tile
  Tiling t;
  // Per k8 step of a chunk, the byte offsets into a footprint of its columns 0 and 4
  // (column_offset): read from the parameters at a step index all threads share.
  int2 columns[Traits::kMaxColumnSteps];
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

// grid: (B * tiles, G * blocks). kSplit: three TF32 products per product (the accurate mode).
// With 64 channels held to three blocks per SM, as the implicit-GEMM kernel is.
template <int kNTiles, bool kSplit>
__global__ void __launch_bounds__(Traits::kThreads, kNTiles == GemmTraits::kMaxNTiles ? 3 : 1)
    igemm_box_moments_kernel(const __grid_constant__ CUtensorMap x_map, const Params p) {
  constexpr int kN = 8 * kNTiles;
  constexpr bool kWgmma = wgmma::kAvailable && Traits::uses_wgmma(kNTiles);
  constexpr int kParts = kSplit ? 2 : 1;
  constexpr int kK = Traits::kBlockK;
  constexpr int kSlicesPerStage = Traits::slices_per_stage(kNTiles, kParts);
  constexpr int kStageK = kSlicesPerStage * kK;
  constexpr int kWarps = GemmTraits::kWarps;
  extern __shared__ __align__(128) float shared[];  // two chunks' footprints
  constexpr int kWBuffers = Traits::w_buffers(kWgmma, kParts);
  constexpr int kLookahead = Traits::w_lookahead(kWgmma, kParts);  // W stages in flight ahead of the one multiplied
  __shared__ __align__(128) float w_s[kWBuffers][kParts * kStageK * kN];  // slices as packed (w_index)
  __shared__ Moments<float> warp_moments[kWarps][kN];
  __shared__ uint64_t landed[2];  // a footprint buffer's tensor copy has landed
  __shared__ uint64_t w_landed[kWBuffers];  // a W buffer's bulk copies have landed

  ptx::launch_dependents();  // the epilogue grid may be scheduled; it waits for this one to end
  if (threadIdx.x == 0) {
    for (int b = 0; b < 2; ++b) ptx::mbarrier_init(ptx::shared_address(&landed[b]), 1);
    for (int b = 0; b < kWBuffers; ++b) ptx::mbarrier_init(ptx::shared_address(&w_landed[b]), 1);
  }
  const Tiling& t = p.t;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int group_row = lane / 4, quad = lane % 4;  // the mma fragments' row and column lane indices
  const long long n = blockIdx.x / p.tiles;
  const int tile = static_cast<int>(blockIdx.x - n * p.tiles);
  const int block = blockIdx.y, conv_group = block / p.blocks;
  const int first_channel = (block - conv_group * p.blocks) * kN;  // within the conv group
  const int map_sample = static_cast<int>(n) * p.conv_groups + conv_group;  // x_map's outermost coordinate
  const int slices = slices_per_chunk(t);
  const int stages = (slices + kSlicesPerStage - 1) / kSlicesPerStage;  // W stages per chunk
  const size_t w_block = static_cast<size_t>(block) * t.chunks * slices * kK * kN;
  const int footprint_floats = t.chunk * t.pitch;
  float* footprints = shared;

  // The lane's bias pairs, read at each box's start (L1) rather than held: with 64 channels and
  // wgmma in flight across stages their 16 registers made ptxas spill.
  const float2* bias = reinterpret_cast<const float2*>(p.bias + static_cast<size_t>(block) * kN + 2 * quad);
  Moments<float> running[kNTiles][2];
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) running[j][0] = running[j][1] = {0.f, 0.f, 0.f};

  // The box position of the lane's fragment row i (m16 tile) and h (+ 8): with wgmma tile i is
  // the step's i-th m64 tile, of which the warp holds 16 rows; with mma.sync the warp's two tiles
  // are its 32 rows.
  const auto position_of = [&](int i, int h) {
    return (kWgmma ? i * 64 + warp * 16 : warp * GemmTraits::kWarpM + i * 16) + group_row + 8 * h;
  };
  // Those rows as offsets into a footprint, with the column quad's channel (column k8 + quad reads
  // channel ci + quad, conv3d_igemm_box.h).
  int row_bytes[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      row_bytes[i][h] = static_cast<int>(sizeof(float)) * (row_offset(t, position_of(i, h)) + quad * t.pitch);
  // Through an identity shuffle, opaque to ptxas, so that a load's address stays this register
  // plus one uniform sum (the footprint and the step's column), LDS [R + UR], rather than a
  // shift-and-add per element.
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) row_bytes[i][h] = __shfl_sync(0xffffffffu, row_bytes[i][h], lane);

  const int first_box = tile * p.steps;
  const int boxes_here = max(0, min(p.steps, t.boxes - first_box));
  const int items = boxes_here * t.chunks;  // (box, chunk) pairs

  // Item `item`'s footprints (box first_box + item / chunks, chunk item % chunks) into `buffer`:
  // one tensor copy of fw x fh x fd x chunk floats by thread 0, zeros where the box leaves x or the
  // conv group's channels; it lands on landed[buffer].
  const auto fill = [&](int item, int buffer) {
    const int chunk = item % t.chunks;
    const FootprintStart f = footprint_start(t, box_origin(t, first_box + item / t.chunks));
    const unsigned bar = ptx::shared_address(&landed[buffer]);
    ptx::fence_proxy_async();  // the buffer's last readers (ordinary loads) before the copy's writes
    ptx::mbarrier_expect_bytes(bar, static_cast<unsigned>(t.chunk * t.pitch * sizeof(float)));
    ptx::tensor_copy_5d(footprints + buffer * footprint_floats, &x_map, f.x, f.y, f.z, chunk * t.chunk, map_sample, bar);
  };
  // The next W stage in (item, stage) order into `buffer`, by thread 0: its slices' kK rows of kN
  // floats per part (a chunk's last stage may hold fewer slices), contiguous in the packed weights,
  // one bulk copy per part, landing on w_landed[buffer]. The block's W is walked from its start
  // again for each box.
  int load_item = 0, load_g = 0;
  size_t load_offset = 0;  // floats into the block's W
  const size_t block_w_floats = static_cast<size_t>(t.chunks) * slices * kK * kN;
  const auto load_next_w = [&](int buffer) {
    if (load_item >= items) return;
    const unsigned floats = static_cast<unsigned>(min(kSlicesPerStage, slices - load_g * kSlicesPerStage) * kK * kN);
    const unsigned bar = ptx::shared_address(&w_landed[buffer]);
    ptx::fence_proxy_async();  // the buffer's last readers (ordinary loads with mma.sync) before the copy's writes
    ptx::mbarrier_expect_bytes(bar, kParts * floats * static_cast<unsigned>(sizeof(float)));
#pragma unroll
    for (int part = 0; part < kParts; ++part)
      ptx::bulk_copy(&w_s[buffer][part * kStageK * kN], (part == 0 ? p.w_hi : p.w_lo) + w_block + load_offset,
                     floats * static_cast<unsigned>(sizeof(float)), bar);
    load_offset += floats;
    if (++load_g == stages) {
      load_g = 0;
      ++load_item;
      if (load_offset == block_w_floats) load_offset = 0;
    }
  };
  unsigned w_parity = 0;  // bit b: the phase of w_landed[b] waited for next

  float acc[2][kNTiles][4];
  [[maybe_unused]] uint32_t a[2][2][2][4];  // wgmma's A: [step % 2][hi, lo][m64 tile][register]
  // The A fragments of step `column` (a column-table entry) from the footprint at shared address
  // `footprint`, for the lane's two m16 tiles: hi (TF32-rounded in the tf32 mode) and, split, lo.
  const auto load_a = [&](unsigned footprint, int2 column, uint32_t (&hi)[2][4], uint32_t (&lo)[2][4]) {
    const unsigned column0 = footprint + column.x, column4 = footprint + column.y;  // uniform
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float v[4] = {ptx::ld_shared(column0 + row_bytes[i][0]), ptx::ld_shared(column0 + row_bytes[i][1]),
                          ptx::ld_shared(column4 + row_bytes[i][0]), ptx::ld_shared(column4 + row_bytes[i][1])};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if constexpr (kSplit) {
          const float h = igemm::truncate_to_tf32(v[e]);
          hi[i][e] = __float_as_uint(h);
          lo[i][e] = __float_as_uint(v[e] - h);
        } else {
          hi[i][e] = __float_as_uint(igemm::tf32_operand(v[e]));
        }
      }
    }
  };
  // Stage g of the chunk from `footprint` and W buffer `stage`, into acc: its slices' k8 steps,
  // step q's W at rows 8 q of each part (w_index).
  const auto multiply_stage = [&](unsigned footprint, int g, int stage) {
    if constexpr (kWgmma) {
      // One warpgroup: per step an m64 x N x 8 wgmma per tile (three split), A from registers,
      // W through a descriptor. A's registers alternate between two steps, so that a step's loads
      // overlap the previous step's wgmmas (wait<1>: the group two steps back has read them); a
      // stage has an even number of steps, and its last two steps' wgmmas stay in flight past the
      // stage's end (the W ring's lookahead leaves their buffer alone).
      const uint64_t w_desc = wgmma::descriptor(&w_s[stage][0]);
#pragma unroll
      for (int q = 0; q < 2 * kSlicesPerStage; ++q) {
        const int s = g * kSlicesPerStage + q / 2;  // the slice within the chunk
        if (kSlicesPerStage > 1 && s >= slices) break;
        wgmma::wait<1>();
        load_a(footprint, p.columns[2 * s + q % 2], a[q % 2][0], a[q % 2][1]);
        wgmma::fence();
        // Descriptors count 16-byte units: the step's rows of the hi part, then of the lo part.
        const uint64_t hi = w_desc + q * 8 * kN * 4 / 16, lo = hi + kStageK * kN * 4 / 16;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          if constexpr (kSplit) {
            wgmma::m64k8_tf32(acc[i], a[q % 2][1][i], hi, 1);  // the small terms first
            wgmma::m64k8_tf32(acc[i], a[q % 2][0][i], lo, 1);
          }
          wgmma::m64k8_tf32(acc[i], a[q % 2][0][i], hi, 1);
        }
        wgmma::commit();
      }
    } else {
      // Per step and warp: its two m16 tiles by the block's n8 tiles, mma.sync m16n8k8.
#pragma unroll
      for (int q = 0; q < 2 * kSlicesPerStage; ++q) {
        const int s = g * kSlicesPerStage + q / 2;
        if (kSlicesPerStage > 1 && s >= slices) break;
        uint32_t hi[2][4], lo[2][4];
        load_a(footprint, p.columns[2 * s + q % 2], hi, lo);
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          // B fragment rows quad and quad + 4 of channel 8 j + group_row: w_index's two 32-float runs.
          const auto w_at = [&](int part, int run) {
            return __float_as_uint(w_s[stage][part * kStageK * kN + q * 8 * kN + (2 * j + run) * 32 + group_row * 4 + quad]);
          };
          const uint32_t w0 = w_at(0, 0), w1 = w_at(0, 1);
          const uint32_t l0 = w_at(kParts - 1, 0), l1 = w_at(kParts - 1, 1);
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const float4 a_hi = make_float4(__uint_as_float(hi[i][0]), __uint_as_float(hi[i][1]),
                                            __uint_as_float(hi[i][2]), __uint_as_float(hi[i][3]));
            if constexpr (kSplit) {
              const float4 a_lo = make_float4(__uint_as_float(lo[i][0]), __uint_as_float(lo[i][1]),
                                              __uint_as_float(lo[i][2]), __uint_as_float(lo[i][3]));
              ptx::mma_tf32(acc[i][j], a_lo, w0, w1);  // the small terms first
              ptx::mma_tf32(acc[i][j], a_hi, l0, l1);
            }
            ptx::mma_tf32(acc[i][j], a_hi, w0, w1);
          }
        }
      }
    }
  };

  __syncthreads();  // the barriers are initialized
  if (items > 0 && threadIdx.x == 0) fill(0, 0);
  if (threadIdx.x == 0)
#pragma unroll
    for (int l = 0; l < kLookahead; ++l) load_next_w(l);
  int stage = 0;  // W's buffer of the stage being multiplied
  // Boxes, then chunks: a box's accumulators start from the bias after the previous box's last
  // wgmmas are waited for, where ptxas can see it (a start under a runtime test of the chunk made
  // it serialize every wgmma).
  int item = 0;  // box * chunks + chunk
  for (int box = 0; box < boxes_here; ++box) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
        const float2 b = __ldg(bias + 4 * j);  // channels 8 j + 2 quad and + 1
        acc[i][j][0] = acc[i][j][2] = b.x;
        acc[i][j][1] = acc[i][j][3] = b.y;
      }
    if constexpr (kWgmma) {
      wgmma::pin(acc[0]);
      wgmma::pin(acc[1]);
    }
    for (int chunk = 0; chunk < t.chunks; ++chunk, ++item) {
      const unsigned footprint = ptx::shared_address(footprints + (item & 1) * footprint_floats);
      const bool more = item + 1 < items;
      for (int g = 0; g < stages; ++g) {
        // Stage g's W, and at g = 0 this item's footprints (the buffer's (item / 2)-th copy), have landed.
        ptx::mbarrier_wait(ptx::shared_address(&w_landed[stage]), (w_parity >> stage) & 1);
        w_parity ^= 1u << stage;
        if (g == 0) ptx::mbarrier_wait(ptx::shared_address(&landed[item & 1]), (item >> 1) & 1);
        // Also: every warp is done with the footprint buffer refilled below and with the W buffer
        // loaded below, kLookahead stages ahead: its last reader was this stage's predecessor with
        // mma.sync, the stage two back with wgmma (each warp has waited for those wgmmas in the
        // stage since: Traits::w_lookahead).
        __syncthreads();
        if (threadIdx.x == 0) {
          load_next_w(stage + kLookahead < kWBuffers ? stage + kLookahead : stage + kLookahead - kWBuffers);
          if (g == 0 && more) fill(item + 1, (item + 1) & 1);
        }
        multiply_stage(footprint, g, stage);
        stage = stage + 1 == kWBuffers ? 0 : stage + 1;
      }
    }
    if constexpr (kWgmma) {
      wgmma::wait<0>();
      wgmma::pin(acc[0]);
      wgmma::pin(acc[1]);
    }
    // The box's positions the lane holds: rows [i][h] in accumulators [i][j][2h + e], channel
    // j * 8 + 2 * quad + e; those outside the output are left out.
    const BoxOrigin o = box_origin(t, first_box + box);
    bool inside[4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int position = position_of(i, h);
        const int r = position / t.columns, c = position - r * t.columns;
        inside[2 * i + h] = o.oh + r < t.oh && o.ow + c < t.ow;
      }
#pragma unroll
    for (int j = 0; j < kNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float h[4] = {hardswish(acc[0][j][e]), hardswish(acc[0][j][2 + e]), hardswish(acc[1][j][e]),
                            hardswish(acc[1][j][2 + e])};
        running[j][e] = merge_moments(running[j][e], moments_of_selected(h, inside));
      }
  }

  // Fixed-order reductions: the 8 row lanes of a channel by xor-shuffles, then the warps in
  // ascending order.
#pragma unroll
  for (int j = 0; j < kNTiles; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int offset = 4; offset < 32; offset *= 2)
        running[j][e] = merge_moments(running[j][e], igemm::shuffle_xor(running[j][e], offset));
      if (group_row == 0) warp_moments[warp][j * 8 + 2 * quad + e] = running[j][e];
    }
  __syncthreads();
  const int c = first_channel + static_cast<int>(threadIdx.x);
  if (threadIdx.x < kN && c < p.cout_per_group) {
    Moments<float> warps[kWarps];
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) warps[wi] = warp_moments[wi][threadIdx.x];
    p.partials[(n * p.tiles + tile) * p.cout + conv_group * p.cout_per_group + c] = merge_all(warps);
  }
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

namespace {

constexpr int kBoxShapes[][2] = {{4, 32}, {8, 16}, {16, 8}};  // rows, columns
static_assert(4 * 32 == Traits::kBoxPositions && 8 * 16 == Traits::kBoxPositions && 16 * 8 == Traits::kBoxPositions,
              "every box shape is one step");

int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

int channel_blocks_of(const FusedLayer& layer) {
  const int64_t per_group = layer.out_channels() / layer.conv_groups;
  const int n = 8 * igemm::n_tiles_for(per_group);
  return static_cast<int>(layer.conv_groups * ((per_group + n - 1) / n));
}

// x as the tensor map the kernel's copies read: (W, H, D, Cin/G, B * G), innermost first, so that
// a box's channels past the conv group's are outside the tensor (zeros), as are its positions
// outside the input.
CUtensorMap x_tensor_map(const at::Tensor& x, const Tiling& t, int64_t conv_groups) {
  static const auto encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    C10_CUDA_CHECK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found));
    TORCH_CHECK(found == cudaDriverEntryPointSuccess && fn != nullptr,
                "fused3d: the CUDA driver has no cuTensorMapEncodeTiled (tensor copies need CUDA 12 on)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  const cuuint64_t w = static_cast<cuuint64_t>(t.w), plane = static_cast<cuuint64_t>(t.h) * w;
  const cuuint64_t channel = plane * static_cast<cuuint64_t>(t.d);
  const cuuint64_t dims[5] = {w, static_cast<cuuint64_t>(t.h), static_cast<cuuint64_t>(t.d),
                              static_cast<cuuint64_t>(t.cin_per_group), static_cast<cuuint64_t>(x.size(0) * conv_groups)};
  const cuuint64_t strides[4] = {w * 4, plane * 4, channel * 4, channel * t.cin_per_group * 4};  // bytes, dims 1-4
  const cuuint32_t box[5] = {static_cast<cuuint32_t>(t.fw), static_cast<cuuint32_t>(t.fh), static_cast<cuuint32_t>(t.fd),
                             static_cast<cuuint32_t>(t.chunk), 1};
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 5, x.data_ptr(), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(r == CUDA_SUCCESS, "fused3d: cuTensorMapEncodeTiled failed (", static_cast<int>(r), ") for x of shape ",
              shape_string(x.sizes()), ", box ", t.fw, "x", t.fh, "x", t.fd, "x", t.chunk);
  return map;
}

template <int kNTiles, bool kSplit>
void launch_kernel(const CUtensorMap& map, const Params& p, long long batch, int channel_blocks, cudaStream_t stream) {
  const long long blocks = batch * p.tiles;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "fused3d: batch ", batch,
              " needs more blocks than one launch takes");
  TORCH_CHECK(channel_blocks <= 65535, "fused3d: ", channel_blocks, " channel blocks exceed one launch's grid");
  const size_t smem = shared_bytes(p.t);
  auto* kernel = igemm_box_moments_kernel<kNTiles, kSplit>;
  // Static and dynamic shared memory together past 48 KB need the opt-in.
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(channel_blocks)), Traits::kThreads, smem, stream>>>(
      map, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool kSplit>
void launch_for_tiles(const CUtensorMap& map, const Params& p, int n_tiles, long long batch, int channel_blocks,
                      cudaStream_t stream) {
  switch (n_tiles) {
    case 1: launch_kernel<1, kSplit>(map, p, batch, channel_blocks, stream); break;
    case 2: launch_kernel<2, kSplit>(map, p, batch, channel_blocks, stream); break;
    case 4: launch_kernel<4, kSplit>(map, p, batch, channel_blocks, stream); break;
    case 8: launch_kernel<8, kSplit>(map, p, batch, channel_blocks, stream); break;
    default: TORCH_CHECK(false, "fused3d: no box implicit-GEMM kernel for ", n_tiles, " channel tiles");
  }
}

}  // namespace

ColumnOrder column_order(const FusedLayer& layer) {
  const auto k = layer.kernel();
  ColumnOrder c{};
  c.cin_per_group = static_cast<int>(layer.in_channels());
  c.taps = static_cast<int>(k[0] * k[1] * k[2]);
  c.chunk = c.taps == 1 ? Traits::kMaxChunk : c.cin_per_group <= Traits::kMinChunk ? Traits::kMinChunk : 2 * Traits::kMinChunk;
  c.chunks = ceil_div(c.cin_per_group, c.chunk);
  const int taps_multiple = Traits::kBlockK / c.chunk;
  c.taps_padded = ceil_div(c.taps, taps_multiple) * taps_multiple;
  return c;
}

namespace {

// t (conv settings, column order, fd, shift) with boxes of rows x columns: the footprint's extent
// and pitch, and the boxes per plane.
// The tensor copy writes the box densely, so a channel's footprint is fd x fh x fw floats and the
// pitch is their product. Rows are padded to whole 16-byte pieces (the copy's unit) and to 4 mod 8
// floats, and planes by up to 7 rows, so that the pitch is 8 or 24 mod 32 where the depth allows
// (else 16): the lanes of a fragment load (positions g = 0..7 along a row, channels quad = 0..3
// a pitch apart) then fall in 32 different banks where the stride along W is 1. A footprint past
// 2^24 floats or the copy's 256 per axis cannot be had, and can_run refuses it.
Tiling with_boxes(Tiling t, int rows, int columns) {
  t.rows = rows;
  t.columns = columns;
  const int64_t fh = int64_t{rows - 1} * t.sh + int64_t{t.kh - 1} * t.dh + 1;
  const int64_t fw = t.shift + int64_t{columns - 1} * t.sw + int64_t{t.kw - 1} * t.dw + 1;
  t.fh = static_cast<int>(std::min<int64_t>(fh, 1 << 24));
  t.fw = static_cast<int>(std::min<int64_t>(fw, 1 << 24));
  t.fw = (t.fw + 3) / 4 * 4;
  if (t.fw / 4 % 2 == 0) t.fw += 4;
  int best_rows = t.fh;
  for (int r = t.fh + 7; r >= t.fh; --r) {
    const int64_t bank = int64_t{t.fd} * r * t.fw % 32;
    const int64_t best = int64_t{t.fd} * best_rows * t.fw % 32;
    const auto rank = [](int64_t b) { return b == 8 || b == 24 ? 0 : b == 16 ? 1 : 2; };
    if (rank(bank) <= rank(best)) best_rows = r;
  }
  t.fh = best_rows;
  const int64_t floats = int64_t{t.fd} * t.fh * t.fw;
  t.pitch = static_cast<int>(std::min<int64_t>(floats, 1 << 24));
  t.boxes_h = ceil_div(t.oh, t.rows);
  t.boxes_w = ceil_div(t.ow, t.columns);
  t.boxes = static_cast<int>(std::min<int64_t>(int64_t{t.od} * t.boxes_h * t.boxes_w, std::numeric_limits<int>::max()));
  return t;
}

// Whether the kernel can hold t's footprints and column table: a tensor copy's box, two chunks'
// footprints within kMaxSharedBytes and a chunk's k8 steps within kMaxColumnSteps.
bool fits(const Tiling& t) {
  if (t.fw > Traits::kMaxBoxExtent || t.fh > Traits::kMaxBoxExtent || t.fd > Traits::kMaxBoxExtent) return false;
  if (2 * slices_per_chunk(t) > Traits::kMaxColumnSteps) return false;
  return shared_bytes(t) <= static_cast<size_t>(Traits::kMaxSharedBytes);
}

}  // namespace

Tiling tiling(const at::Tensor& x, const FusedLayer& layer) {
  Tiling base{};
  static_cast<ConvSpatial&>(base) = conv_spatial(x, layer);
  static_cast<ColumnOrder&>(base) = column_order(layer);
  base.fd = (base.kd - 1) * base.dd + 1;
  // Box origins along W are multiples of 8 columns, so every footprint's first column is -pw mod 4.
  base.shift = (4 - base.pw % 4) % 4;
  // The shape that pads the output plane least, then the smaller footprint (as the box needs it,
  // before padding). Not a shape that fits where the least padded one does not: the dilation-2
  // layer of the suite fits 8 x 16 boxes (90 KB, two blocks per SM) and not 4 x 32 ones (115 KB),
  // and in 8 x 16 boxes it took 0.367 / 0.541 ms (tf32 / accurate) against the implicit-GEMM
  // kernel's 0.381 / 0.492 (H200, run 110).
  Tiling best{};
  int64_t best_padded = -1, best_footprint = 0;
  for (const auto& shape : kBoxShapes) {
    const int rows = shape[0], columns = shape[1];
    const Tiling t = with_boxes(base, rows, columns);
    const int64_t padded = int64_t{t.boxes_h} * rows * t.boxes_w * columns;
    const int64_t footprint = (int64_t{rows - 1} * t.sh + int64_t{t.kh - 1} * t.dh + 1) *
                              (t.shift + int64_t{columns - 1} * t.sw + int64_t{t.kw - 1} * t.dw + 1);
    if (best_padded < 0 || padded < best_padded || (padded == best_padded && footprint < best_footprint)) {
      best = t;
      best_padded = padded;
      best_footprint = footprint;
    }
  }
  return best;
}

bool can_run(const at::Tensor& x, const FusedLayer& layer) {
  if (x.scalar_type() != at::kFloat || device_code(x.device().index()).arch < 900) return false;
  // The tensor map's strides are whole 16-byte pieces and its base 16-byte aligned.
  if (x.size(4) % 4 != 0 || reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 != 0) return false;
  return fits(tiling(x, layer));
}

// (Cout, Cin/G, KD, KH, KW) -> (G, Cout/G, chunks, taps_padded, chunk) -> (G, Cout/G, K): taps
// padded with zeros (tap 0's elements, zero weights), channels to whole chunks.
// Then each (K, N) block's element (k, c) to w_index(k, c, N): (k / 8, k % 8 / 4, k % 4, c / 8, c % 8)
// -> (k / 8, c / 8, k % 8 / 4, c % 8, k % 4).
igemm::IgemmWeights pack_weights(const FusedLayer& layer, Precision precision) {
  const ColumnOrder t = column_order(layer);
  const int64_t groups = layer.conv_groups, per_group = layer.out_channels() / groups;
  const at::Tensor w = at::constant_pad_nd(layer.weight.to(at::kFloat).reshape({groups, per_group, t.cin_per_group, t.taps}),
                                           {0, t.taps_padded - t.taps, 0, int64_t{t.chunks} * t.chunk - t.cin_per_group});
  const int64_t k = int64_t{t.chunks} * t.taps_padded * t.chunk;
  igemm::IgemmWeights packed = igemm::pack_columns(
      layer, w.reshape({groups, per_group, t.chunks, t.chunk, t.taps_padded}).permute({0, 1, 2, 4, 3}).reshape({groups, per_group, k}),
      precision);
  const auto to_tiles = [](const at::Tensor& v) {
    const int64_t rows = v.size(0), n = v.size(2);
    return v.view({rows, v.size(1) / 8, 2, 4, n / 8, 8}).permute({0, 1, 4, 2, 5, 3}).contiguous().view(v.sizes());
  };
  packed.hi = to_tiles(packed.hi);
  if (packed.lo.defined()) packed.lo = to_tiles(packed.lo);
  return packed;
}

int tiles(const at::Tensor& x, const FusedLayer& layer) {
  const Tiling t = tiling(x, layer);
  const int sms = at::cuda::getDeviceProperties(x.device().index())->multiProcessorCount;
  const int steps = igemm::steps_per_tile(x.size(0), t.boxes * Traits::kBoxPositions, channel_blocks_of(layer), sms);
  return ceil_div(t.boxes, steps);
}

void launch(const at::Tensor& x, const FusedLayer& layer, const igemm::IgemmWeights& weights, int tiles,
            at::Tensor& partials, cudaStream_t stream) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "fused3d: the box implicit-GEMM kernel takes float32 x, got ",
              dtype_name(x.scalar_type()));
  Params p{};
  p.t = tiling(x, layer);
  TORCH_CHECK(weights.hi.size(1) == int64_t{p.t.chunks} * p.t.taps_padded * p.t.chunk,
              "fused3d: weights packed for K ", weights.hi.size(1), ", the box kernel's K is ",
              int64_t{p.t.chunks} * p.t.taps_padded * p.t.chunk);
  p.w_hi = weights.hi.data_ptr<float>();
  p.w_lo = weights.lo.defined() ? weights.lo.data_ptr<float>() : nullptr;
  p.bias = weights.bias.data_ptr<float>();
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  p.conv_groups = static_cast<int>(layer.conv_groups);
  p.cout = static_cast<int>(layer.out_channels());
  p.cout_per_group = static_cast<int>(layer.out_channels() / layer.conv_groups);
  p.blocks = weights.blocks;
  p.tiles = tiles;
  p.steps = ceil_div(p.t.boxes, tiles);
  for (int i = 0; i < 2 * slices_per_chunk(p.t); ++i)
    p.columns[i] = make_int2(static_cast<int>(sizeof(float)) * column_offset(p.t, 8 * i),
                             static_cast<int>(sizeof(float)) * column_offset(p.t, 8 * i + 4));  // balanced: the fewest boxes per tile that cover the sample
  const int channel_blocks = static_cast<int>(layer.conv_groups) * weights.blocks;
  const CUtensorMap map = x_tensor_map(x, p.t, layer.conv_groups);
  if (weights.lo.defined())
    launch_for_tiles<true>(map, p, weights.n_tiles, x.size(0), channel_blocks, stream);
  else
    launch_for_tiles<false>(map, p, weights.n_tiles, x.size(0), channel_blocks, stream);
}

}  // namespace fused3d::igemm_box
