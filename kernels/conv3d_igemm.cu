// The implicit-GEMM kernel: conv3d -> bias -> hardswish -> per-(sample, channel) moments on tensor
// cores, for every layer the loader takes (any channels, kernel, stride, zero padding, dilation,
// conv groups; float32, float16, bfloat16). conv3d_igemm.h has the GEMM: M = output positions of
// one sample, N = output channels of one conv group, K = the group's input channels x taps.
//
// Operands: mma.sync m16n8k8 with TF32 operands and float32 accumulators (sm_80 on).
//   - accurate mode, float32: each operand is split into TF32 hi + lo parts (conv3d_igemm.h's
//     truncate_to_tf32 says how, for A) and a product is a_hi*w_hi + a_lo*w_hi + a_hi*w_lo: what
//     it drops is ~2^-21 of it, float32's rounding 2^-24. x needs no pivot: the split keeps 21
//     bits wherever x sits, so an offset input is as accurate as any.
//   - tf32 mode: one product of the rounded operands (PyTorch's allow_tf32).
//   - float16 and bfloat16: their values are exact in TF32, so one product is exact in both modes.
//
// A block of kThreads threads takes one sample, one tile of up to kMaxSteps steps of kBlockM
// output positions, and one block of up to kBlockN output channels of one conv group. Per step,
// K goes through a two-stage pipeline of kBlockK slices: each thread gathers its row's kBlockK
// values of A into registers (global loads in flight while the warps multiply the slice before),
// then stores them to shared memory; W's slice arrives by cp.async. A warp multiplies its 32 rows
// by the block's channels. The step's outputs get the bias (the accumulators start from it),
// hardswish, and join each thread's running (count, mean, M2) per channel; at the end the block
// merges lanes (shuffles) and warps (shared memory) in a fixed order and writes one Moments per
// channel of its tile: no atomics, bitwise deterministic. The conv output never reaches memory.
//
// The gather: a thread's row of A for a slice is kBlockK loads at the row's offset plus each
// column's (column_of: the input channel and tap as one offset, and the tap's displacement per
// axis), from a table of the slice's columns that kBlockK threads write one slice ahead. Where the
// layer has zero padding each load is predicated on the row's coordinates plus the displacement
// being inside (three unsigned compares); without padding every load is inside. K is padded to
// whole slices with zero weights and columns that read nothing (or an element the row reads
// anyway: no NaN or Inf from elsewhere).
//
// Limits: none on the conv settings; offsets within one sample are 32-bit (the entry checks
// Cin*D*H*W < 2^31).
#include "conv3d_igemm.h"

#include "device_code.h"
#include "moments.h"
#include "ptx.h"
#include "tensorcore_weights.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace fused3d::igemm {

struct Params {
  const float* w_hi;  // (G * blocks, k_slices * kBlockK, N)
  const float* w_lo;  // the same, lo parts (split products only)
  const uint16_t* w_half;  // float16 / bfloat16 models: (G * blocks, k_slices, N, kBlockK)
  const float* bias;  // (G * blocks, N)
  Moments<float>* partials;
  long long sample_stride;  // Cin * D * H * W
  int group_stride;         // Cin/G * D * H * W: from one conv group's input channels to the next
  Geometry geo;
  int k_slices;                      // K padded, in kBlockK slices
  int cout, cout_per_group, blocks;  // blocks: channel blocks per conv group
  int tiles, steps;                  // tiles per sample, steps per tile
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

// grid: (B * tiles, G * blocks). kPadded: the layer has zero padding (the gather tests bounds).
// float32 x: m16n8k8 TF32 MMAs (kSplit: three per product); float16 / bfloat16 x: m16n8k16 MMAs
// in that type on the values as they are (kHalf), A and W held as 16-bit patterns.
// With 64 channels ptxas takes 192-212 registers, two blocks per SM; held to 168 (three blocks,
// a few spilled bytes) the 64-channel layers ran 7-14% faster (H200); the narrower instances use
// at most 150 and ran 5% slower under the same bound, so they keep the default.
template <typename T, int kNTiles, bool kSplit, bool kPadded>
__global__ void __launch_bounds__(Traits::kThreads, kNTiles == Traits::kMaxNTiles ? 3 : 1)
    igemm_moments_kernel(const T* __restrict__ x, const Params p) {
  constexpr bool kHalf = !std::is_same_v<T, float>;
  static_assert(!(kHalf && kSplit), "16-bit inputs have exact products");
  using Elem = std::conditional_t<kHalf, uint16_t, float>;  // A's elements as stored
  constexpr int kN = 8 * kNTiles;
  constexpr int kLdW = Traits::ld_w(kN);
  constexpr int kParts = kSplit ? 2 : 1;
  constexpr int kK = Traits::kBlockK;
  constexpr int kLdA = kHalf ? Traits::kLdHalf : Traits::kLdA;
  // W's stage: float32 [part][k][kLdW] floats, or 16-bit [n][kLdHalf] halves (as 32-bit words).
  constexpr int kWWords = kHalf ? kN * Traits::kLdHalf / 2 : kParts * kK * kLdW;
  __shared__ __align__(16) Elem a_s[Traits::kStages][Traits::kBlockM][kLdA];
  __shared__ __align__(16) float w_s[Traits::kStages][kWWords];
  __shared__ __align__(16) int4 columns[Traits::kStages][kK];  // slice s's Columns in slot s % 2
  __shared__ Moments<float> warp_moments[Traits::kWarps][kN];

  ptx::launch_dependents();  // the epilogue grid may be scheduled; it waits for this one to end
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int group_row = lane / 4, quad = lane % 4;  // the mma fragments' row and column lane indices
  const long long n = blockIdx.x / p.tiles;
  const int tile = static_cast<int>(blockIdx.x - n * p.tiles);
  const int block = blockIdx.y, conv_group = block / p.blocks;
  const int first_channel = (block - conv_group * p.blocks) * kN;  // within the conv group
  const T* xs = x + n * p.sample_stride + static_cast<long long>(conv_group) * p.group_stride;
  const size_t w_block = static_cast<size_t>(block) * p.k_slices * kK * kN;

  float2 bias[kNTiles];
#pragma unroll
  for (int j = 0; j < kNTiles; ++j)
    bias[j] = *reinterpret_cast<const float2*>(p.bias + static_cast<size_t>(block) * kN + j * 8 + 2 * quad);
  Moments<float> running[kNTiles][2];
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) running[j][0] = running[j][1] = {0.f, 0.f, 0.f};

  // Slice s's column table, by the first kK threads.
  const auto write_columns = [&](int s) {
    if (threadIdx.x < kK) {
      const Column c = column_of(p.geo, s * kK + static_cast<int>(threadIdx.x));
      columns[s % Traits::kStages][threadIdx.x] = make_int4(c.offset, c.dz, c.dy, c.dx);
    }
  };
  // W's slice s into stage `stage`, 16 bytes per copy: float32 kK rows of kN floats per part;
  // 16-bit kN rows of kK halves.
  const auto load_w = [&](int s, int stage) {
    constexpr int kCopies = kK * kN * sizeof(Elem) / 16, kRounds = (kCopies + Traits::kThreads - 1) / Traits::kThreads;
#pragma unroll
    for (int part = 0; part < kParts; ++part) {
#pragma unroll
      for (int round = 0; round < kRounds; ++round) {
        const int i = round * Traits::kThreads + static_cast<int>(threadIdx.x);
        if (kCopies % Traits::kThreads != 0 && i >= kCopies) continue;
        if constexpr (kHalf) {
          const uint16_t* w = p.w_half + w_block + static_cast<size_t>(s) * kK * kN;
          const int row = i / 2, piece = i % 2;  // two 8-half pieces per channel row
          ptx::cp_async16(&w_s[stage][row * Traits::kLdHalf / 2 + piece * 4],
                          reinterpret_cast<const float*>(w + row * kK + piece * 8));
        } else {
          const float* w = (part == 0 ? p.w_hi : p.w_lo) + w_block + static_cast<size_t>(s) * kK * kN;
          const int row = i / (kN / 4), col = (i - row * (kN / 4)) * 4;
          ptx::cp_async16(&w_s[stage][(part * kK + row) * kLdW + col], w + row * kN + col);
        }
      }
    }
    ptx::cp_async_commit();
  };

  const unsigned d = p.geo.d, h = p.geo.h, w = p.geo.w;
  for (int step = 0; step < p.steps; ++step) {
    const int m0 = (tile * p.steps + step) * Traits::kBlockM;
    if (m0 >= p.geo.positions) break;  // the last tile's steps past the end: the same for the whole block
    // This thread's row of A; rows past the end repeat the last one (finite, in bounds) and are
    // left out of the statistics.
    const Row row = row_of(p.geo, min(m0 + static_cast<int>(threadIdx.x), p.geo.positions - 1));
    const T* row_base = xs + row.offset;  // before xs where the row's first tap is in the padding

    // Row `row` of A's slice s (floats, or the 16-bit patterns), from the slice's column table.
    Elem staged[kK];
    const auto gather = [&](int s) {
      const int4* table = columns[s % Traits::kStages];
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        const int4 c = table[i];
        // inside() without its short-circuit (three compares and two ANDs, no branches), and the
        // column's offset unsigned from the row's first element (one wide multiply-add for the
        // address); a load that is not inside is not issued.
        bool in = true;
        if constexpr (kPadded)
          in = (static_cast<unsigned>(row.z + c.y) < d) & (static_cast<unsigned>(row.y + c.z) < h) &
               (static_cast<unsigned>(row.x + c.w) < w);
        if constexpr (kHalf)
          staged[i] = in ? reinterpret_cast<const uint16_t*>(row_base)[static_cast<unsigned>(c.x)] : uint16_t{0};
        else
          staged[i] = in ? row_base[static_cast<unsigned>(c.x)] : 0.f;
      }
    };
    const auto store = [&](int stage) {
      if constexpr (kHalf) {
        uint4* dst = reinterpret_cast<uint4*>(&a_s[stage][threadIdx.x][0]);
        const auto pair = [&](int i) { return uint32_t{staged[i]} | uint32_t{staged[i + 1]} << 16; };
#pragma unroll
        for (int i = 0; i < kK / 8; ++i) dst[i] = make_uint4(pair(8 * i), pair(8 * i + 2), pair(8 * i + 4), pair(8 * i + 6));
      } else {
        float4* dst = reinterpret_cast<float4*>(&a_s[stage][threadIdx.x][0]);
#pragma unroll
        for (int i = 0; i < kK / 4; ++i)
          dst[i] = make_float4(staged[4 * i], staged[4 * i + 1], staged[4 * i + 2], staged[4 * i + 3]);
      }
    };

    float acc[2][kNTiles][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
        acc[i][j][0] = acc[i][j][2] = bias[j].x;
        acc[i][j][1] = acc[i][j][3] = bias[j].y;
      }

    // Slices 0 and 1's tables (the slots the previous step left are no longer read: it ended on a
    // barrier; where K has at most two slices they stay from the first step), then slice 0's A and W.
    if (step == 0 || p.k_slices > Traits::kStages) {
      write_columns(0);
      if (p.k_slices > 1) write_columns(1);
    }
    load_w(0, 0);
    __syncthreads();
    gather(0);
    store(0);
    ptx::cp_async_wait<0>();
    __syncthreads();
    for (int s = 0; s < p.k_slices; ++s) {
      const int stage = s % Traits::kStages;
      const bool more = s + 1 < p.k_slices;
      if (more) {
        load_w(s + 1, stage ^ 1);
        gather(s + 1);  // global loads in flight while the slice is multiplied
      }
      if (s + 2 < p.k_slices) write_columns(s + 2);  // slot s % 2: slice s's table, read before the last barrier
      if constexpr (kHalf) {
        // One m16n8k16 step: rows r, r + 8 at k = 2t (+1) and 2t + 8 (+9), as 32-bit pairs.
        const auto* a_words = reinterpret_cast<const uint32_t*>(&a_s[stage][0][0]);
        const auto* w_words = reinterpret_cast<const uint32_t*>(&w_s[stage][0]);
        constexpr int kRowWords = Traits::kLdHalf / 2;
        uint4 a[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = warp * Traits::kWarpM + i * 16 + group_row;
          a[i] = make_uint4(a_words[r * kRowWords + quad], a_words[(r + 8) * kRowWords + quad],
                            a_words[r * kRowWords + quad + 4], a_words[(r + 8) * kRowWords + quad + 4]);
        }
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          const int c = j * 8 + group_row;
          const uint2 b = make_uint2(w_words[c * kRowWords + quad], w_words[c * kRowWords + quad + 4]);
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            if constexpr (std::is_same_v<T, at::Half>)
              ptx::mma_f16(acc[i][j], a[i], b);
            else
              ptx::mma_bf16(acc[i][j], a[i], b);
          }
        }
      } else {
#pragma unroll
      for (int k8 = 0; k8 < kK; k8 += 8) {
        float4 a_hi[2], a_lo[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = warp * Traits::kWarpM + i * 16 + group_row;
          const float v[4] = {a_s[stage][r][k8 + quad], a_s[stage][r + 8][k8 + quad], a_s[stage][r][k8 + quad + 4],
                              a_s[stage][r + 8][k8 + quad + 4]};
          float hi[4], lo[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if constexpr (kSplit) {
              hi[e] = truncate_to_tf32(v[e]);
              lo[e] = v[e] - hi[e];
            } else {
              hi[e] = tf32_operand(v[e]);
            }
          }
          a_hi[i] = make_float4(hi[0], hi[1], hi[2], hi[3]);
          if constexpr (kSplit) a_lo[i] = make_float4(lo[0], lo[1], lo[2], lo[3]);
        }
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) {
          const int c = j * 8 + group_row;
          const auto w_at = [&](int part, int k) { return __float_as_uint(w_s[stage][(part * kK + k) * kLdW + c]); };
          const uint32_t w0 = w_at(0, k8 + quad), w1 = w_at(0, k8 + quad + 4);
          const uint32_t l0 = w_at(kParts - 1, k8 + quad), l1 = w_at(kParts - 1, k8 + quad + 4);
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            if constexpr (kSplit) {
              ptx::mma_tf32(acc[i][j], a_lo[i], w0, w1);  // the small terms first
              ptx::mma_tf32(acc[i][j], a_hi[i], l0, l1);
            }
            ptx::mma_tf32(acc[i][j], a_hi[i], w0, w1);
          }
        }
      }
      }
      if (more) store(stage ^ 1);
      ptx::cp_async_wait<0>();
      __syncthreads();
    }

    // Rows warp * 32 + group_row + {0, 8, 16, 24} of the step hold accumulators [i][j][e] and
    // [i][j][2 + e] (i = 0, 1) for channel j * 8 + 2 * quad + e; the rows that exist are a prefix.
    const int first_row = m0 + warp * Traits::kWarpM + group_row;
    const int valid = max(0, min(4, (p.geo.positions - first_row + 7) / 8));
#pragma unroll
    for (int j = 0; j < kNTiles; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float h[4] = {hardswish(acc[0][j][e]), hardswish(acc[0][j][2 + e]), hardswish(acc[1][j][e]),
                            hardswish(acc[1][j][2 + e])};
        running[j][e] = merge_moments(running[j][e], moments_of(h, valid));
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
        running[j][e] = merge_moments(running[j][e], shuffle_xor(running[j][e], offset));
      if (group_row == 0) warp_moments[warp][j * 8 + 2 * quad + e] = running[j][e];
    }
  __syncthreads();
  const int c = first_channel + static_cast<int>(threadIdx.x);
  if (threadIdx.x < kN && c < p.cout_per_group) {
    Moments<float> warps[Traits::kWarps];
#pragma unroll
    for (int wi = 0; wi < Traits::kWarps; ++wi) warps[wi] = warp_moments[wi][threadIdx.x];
    p.partials[(n * p.tiles + tile) * p.cout + conv_group * p.cout_per_group + c] = merge_all(warps);
  }
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

int n_tiles_for(int64_t cout_per_group) {
  return cout_per_group <= 8 ? 1 : cout_per_group <= 16 ? 2 : cout_per_group <= 32 ? 4 : Traits::kMaxNTiles;
}

// Steps per tile: up to kMaxSteps where the grid has blocks to spare (each step's block-wide
// merges are amortized, and the epilogue reads fewer tiles), fewer where the batch would leave
// SMs idle (B = 1 of the standard shape: 99 steps, one per block).
int steps_per_tile(long long batch, int positions, int channel_blocks, int sms) {
  const long long steps = (positions + Traits::kBlockM - 1) / Traits::kBlockM;
  const long long work = batch * steps * channel_blocks;
  return static_cast<int>(std::clamp<long long>(work / (16LL * sms), 1, Traits::kMaxSteps));
}

namespace {

int64_t k_total(const FusedLayer& l) {
  const auto k = l.kernel();
  return l.in_channels() * k[0] * k[1] * k[2];
}

template <typename T, int kNTiles, bool kSplit, bool kPadded>
void launch_kernel(const at::Tensor& x, const Params& p, long long batch, int channel_blocks, cudaStream_t stream) {
  const long long blocks = batch * p.tiles;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "fused3d: batch ", batch,
              " needs more blocks than one launch takes");
  TORCH_CHECK(channel_blocks <= 65535, "fused3d: ", channel_blocks, " channel blocks exceed one launch's grid");
  igemm_moments_kernel<T, kNTiles, kSplit, kPadded>
      <<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(channel_blocks)), Traits::kThreads, 0, stream>>>(
          x.data_ptr<T>(), p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, bool kSplit, bool kPadded>
void launch_for_tiles(const at::Tensor& x, const Params& p, int n_tiles, long long batch, int channel_blocks,
                      cudaStream_t stream) {
  switch (n_tiles) {
    case 1: launch_kernel<T, 1, kSplit, kPadded>(x, p, batch, channel_blocks, stream); break;
    case 2: launch_kernel<T, 2, kSplit, kPadded>(x, p, batch, channel_blocks, stream); break;
    case 4: launch_kernel<T, 4, kSplit, kPadded>(x, p, batch, channel_blocks, stream); break;
    case 8: launch_kernel<T, 8, kSplit, kPadded>(x, p, batch, channel_blocks, stream); break;
    default: TORCH_CHECK(false, "fused3d: no implicit-GEMM kernel for ", n_tiles, " channel tiles");
  }
}

template <typename T, bool kSplit>
void launch_for_padding(const at::Tensor& x, const Params& p, int n_tiles, long long batch, int channel_blocks,
                        cudaStream_t stream) {
  if (p.geo.padded)
    launch_for_tiles<T, kSplit, true>(x, p, n_tiles, batch, channel_blocks, stream);
  else
    launch_for_tiles<T, kSplit, false>(x, p, n_tiles, batch, channel_blocks, stream);
}

}  // namespace

Geometry geometry(const at::Tensor& x, const FusedLayer& layer) {
  const ConvSpatial c = conv_spatial(x, layer);
  Geometry g{};
  g.d = c.d;
  g.h = c.h;
  g.w = c.w;
  g.oh = c.oh;
  g.ow = c.ow;
  g.positions = static_cast<int>(int64_t{c.od} * c.oh * c.ow);
  g.sd = c.sd;
  g.sh = c.sh;
  g.sw = c.sw;
  g.pd = c.pd;
  g.ph = c.ph;
  g.pw = c.pw;
  g.dd = c.dd;
  g.dh = c.dh;
  g.dw = c.dw;
  g.kh = c.kh;
  g.kw = c.kw;
  g.taps = c.kd * c.kh * c.kw;
  g.k_total = static_cast<int>(layer.in_channels()) * g.taps;
  g.padded = layer.padding != std::array<int64_t, 3>{0, 0, 0};
  return g;
}

bool splits(at::ScalarType dtype, Precision precision) {
  return dtype == at::kFloat && precision == Precision::kAccurate;
}

// (Cout, Cin/G, KD, KH, KW) -> (G, Cout/G, K) with k = ci * taps + tap, K padded to whole slices
// with zeros.
IgemmWeights pack_weights(const FusedLayer& l, Precision precision) {
  const int64_t groups = l.conv_groups, per_group = l.out_channels() / groups;
  const int64_t k = k_total(l), k_padded = (k + Traits::kBlockK - 1) / Traits::kBlockK * Traits::kBlockK;
  return pack_columns(l, at::constant_pad_nd(l.weight.to(at::kFloat).reshape({groups, per_group, k}), {0, k_padded - k}),
                      precision);
}

// (G, Cout/G, K) -> (G * blocks, K, 8 * n_tiles): per conv group, W = the group's weights as
// (channels, K) transposed, its channels padded to whole blocks with zeros.
IgemmWeights pack_columns(const FusedLayer& l, const at::Tensor& w_columns, Precision precision) {
  const int64_t groups = l.conv_groups, cout = l.out_channels(), per_group = cout / groups;
  const int64_t k_padded = w_columns.size(2);
  TORCH_CHECK(k_padded % Traits::kBlockK == 0, "fused3d: packed K of ", k_padded, " is not whole slices");
  IgemmWeights packed;
  packed.n_tiles = n_tiles_for(per_group);
  const int64_t n = 8 * packed.n_tiles;
  packed.blocks = static_cast<int>((per_group + n - 1) / n);
  const int64_t padded_channels = packed.blocks * n;
  const at::Tensor w = at::constant_pad_nd(w_columns, {0, 0, 0, padded_channels - per_group});
  const at::Tensor wt = w.reshape({groups * packed.blocks, n, k_padded}).transpose(1, 2).contiguous();
  packed.hi = k4::round_to_tf32(wt);
  if (splits(l.weight.scalar_type(), precision)) packed.lo = k4::round_to_tf32(wt - packed.hi);
  if (l.weight.scalar_type() != at::kFloat)  // (G * blocks, N, K padded) -> (G * blocks, slices, N, kBlockK)
    packed.half = w.reshape({groups * packed.blocks, n, k_padded / Traits::kBlockK, Traits::kBlockK})
                      .permute({0, 2, 1, 3})
                      .to(l.weight.scalar_type())
                      .contiguous();
  const at::Tensor b = l.bias.defined() ? l.bias.to(at::kFloat).reshape({groups, per_group})
                                        : at::zeros({groups, per_group}, l.weight.options().dtype(at::kFloat));
  packed.bias = at::constant_pad_nd(b, {0, padded_channels - per_group}).reshape({groups * packed.blocks, n}).contiguous();
  return packed;
}

bool can_run(const at::Tensor& x) { return device_code(x.device().index()).arch >= 800; }

int tiles(const at::Tensor& x, const FusedLayer& layer) {
  const Geometry g = geometry(x, layer);
  const int64_t per_group = layer.out_channels() / layer.conv_groups;
  const int n = 8 * n_tiles_for(per_group);
  const int channel_blocks = static_cast<int>(layer.conv_groups * ((per_group + n - 1) / n));
  const int sms = at::cuda::getDeviceProperties(x.device().index())->multiProcessorCount;
  const int steps = steps_per_tile(x.size(0), g.positions, channel_blocks, sms);
  const int total_steps = (g.positions + Traits::kBlockM - 1) / Traits::kBlockM;
  return (total_steps + steps - 1) / steps;
}

void launch(const at::Tensor& x, const FusedLayer& layer, const IgemmWeights& weights, int tiles, at::Tensor& partials,
            cudaStream_t stream) {
  Params p{};
  p.w_hi = weights.hi.data_ptr<float>();
  p.w_lo = weights.lo.defined() ? weights.lo.data_ptr<float>() : nullptr;
  p.w_half = weights.half.defined() ? static_cast<const uint16_t*>(weights.half.data_ptr()) : nullptr;
  p.bias = weights.bias.data_ptr<float>();
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  p.geo = geometry(x, layer);
  p.sample_stride = x.stride(0);
  p.group_stride = static_cast<int>(layer.in_channels()) * p.geo.d * p.geo.h * p.geo.w;
  p.k_slices = static_cast<int>(weights.hi.size(1) / Traits::kBlockK);
  p.cout = static_cast<int>(layer.out_channels());
  p.cout_per_group = static_cast<int>(layer.out_channels() / layer.conv_groups);
  p.blocks = weights.blocks;
  p.tiles = tiles;
  // Balanced steps: the fewest per tile that cover the positions in `tiles` tiles.
  const int total_steps = (p.geo.positions + Traits::kBlockM - 1) / Traits::kBlockM;
  p.steps = (total_steps + tiles - 1) / tiles;
  const long long batch = x.size(0);
  const int channel_blocks = static_cast<int>(layer.conv_groups) * weights.blocks;
  const bool split = weights.lo.defined();
  switch (x.scalar_type()) {
    case at::kFloat:
      if (split)
        launch_for_padding<float, true>(x, p, weights.n_tiles, batch, channel_blocks, stream);
      else
        launch_for_padding<float, false>(x, p, weights.n_tiles, batch, channel_blocks, stream);
      break;
    case at::kHalf: launch_for_padding<at::Half, false>(x, p, weights.n_tiles, batch, channel_blocks, stream); break;
    case at::kBFloat16:
      launch_for_padding<at::BFloat16, false>(x, p, weights.n_tiles, batch, channel_blocks, stream);
      break;
    default: TORCH_CHECK(false, "fused3d: no implicit-GEMM kernel for dtype ", dtype_name(x.scalar_type()));
  }
}

}  // namespace fused3d::igemm
