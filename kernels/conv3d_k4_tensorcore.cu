// Tensor-core fast path: conv3d (kernel 4x4x4, 16 output channels, any Cin) -> bias -> hardswish
// -> per-(sample, channel) moments, as an implicit GEMM on mma.sync m16n8k8 TF32. The GroupNorm-mean
// epilogue is the general path's (conv3d_hardswish_groupnorm_mean.cu, moments.h).
//
// GEMM view: M = output positions, N = Cout = 16 (two n8 halves), K = Cin*64, taken 8 at a time as
// (ci, kd, kh pair p, kw 0..3). For 16 consecutive output columns ow0.. of one output row oh, lane
// (g = lane/4, t = lane%4) of m16n8k8's A fragment holds
//   a0 = x[ci][od+kd][oh+2p  ][ow0+g+t],   a1 = x[ci][od+kd][oh+2p  ][ow0+g+8+t],
//   a2 = x[ci][od+kd][oh+2p+1][ow0+g+t],   a3 = x[ci][od+kd][oh+2p+1][ow0+g+8+t].
// Each register is one input row's value at a fixed column offset, so a warp that computes kRows
// output rows loads kRows+3 input rows (two values each) per (ci, kd) and reuses each loaded row
// for all four kh that touch it: 2*(kRows+3) loads feed 4*kRows MMAs (8*kRows when split).
//
// Precision: x is rounded to TF32 (cvt.rna: unbiased, so its error averages out over the spatial
// mean). The weights are the error that does not average out (every output uses the same rounded
// weights), so the accurate mode splits them, w = hi + lo, both TF32, and issues two MMAs; the tf32
// mode uses hi alone (DESIGN-NOTES: 2e-6 vs 3e-4 relative L2 at U[0,1) inputs).
//
// Work split: a warp tile is kRows output rows x 16 columns of one (sample, od); rows and columns
// past the edge are covered by shifting the last tile back (overlap) and masking the duplicates
// out of the statistics, so no load leaves the input row. A block is kWarps warp tiles in order
// (the standard layer's 3 row tiles x 2 column tiles: one od slice per block, whose 4-deep input
// slab the six warps share through L1). Each block writes one Moments per channel; merges run in
// a fixed order: deterministic.
//
// Limits (else the general kernel runs): kernel 4x4x4, Cout 16, stride 1, no padding, dilation 1,
// conv groups 1, float32, OH >= kRows, OW >= 16.
#include "conv3d_k4_tensorcore.h"
#include "moments.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>
#include <limits>

namespace fused3d {
namespace {

constexpr int kKernel = 4;             // kernel extent along each axis (specialized)
constexpr int kCout = 16;              // output channels (two mma n8 halves)
constexpr int kRows = 10;              // output rows per warp tile: 29 = 3 tiles with 1 row overlap
constexpr int kCols = 16;              // output columns per warp tile: mma M
constexpr int kWarps = 6;              // warp tiles per block
constexpr int kThreads = kWarps * 32;
constexpr int kInputRows = kRows + kKernel - 1;
static_assert(kKernel == 4, "the A-fragment mapping takes kw = t (0..3) and kh in pairs");
static_assert(kCout == 16, "two n8 halves");
static_assert(kRows >= 1 && kRows <= 16, "accumulators: 8 registers per row");

struct TcShape {
  long long sample_stride;  // Cin*D*H*W
  int cin, d, h, w;
  int od, oh, ow;
  int row_tiles, col_tiles, warp_tiles, tiles;
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

// d += a * b for one m16n8k8 TF32 tile.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const float2& b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(__float_as_uint(b.x)), "r"(__float_as_uint(b.y)));
}

__device__ __forceinline__ Moments<float> shuffle_down(const Moments<float>& m, int offset) {
  return {__shfl_down_sync(0xffffffffu, m.count, offset), __shfl_down_sync(0xffffffffu, m.mean, offset),
          __shfl_down_sync(0xffffffffu, m.m2, offset)};
}

// Weight fragments: packed[ci][kd][p][nh][part][lane] = (b0, b1) with part 0 = hi, 1 = lo.
template <int kParts>
__global__ void __launch_bounds__(kThreads)
    conv_k4_tensorcore_moments_kernel(const float* __restrict__ x, const float2* __restrict__ packed,
                                      const float* __restrict__ bias, TcShape s,
                                      Moments<float>* __restrict__ partials) {
  __shared__ Moments<float> warp_moments[kWarps][kCout];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const long long n = blockIdx.x / s.tiles;
  const int tile = blockIdx.x - n * s.tiles;
  const int warp_tile = tile * kWarps + warp;

  // This thread's moments for channels nh*8 + 2t + e, index [nh][e].
  Moments<float> moments[2][2] = {};
  if (warp_tile < s.warp_tiles) {
    const int col_tile = warp_tile % s.col_tiles;
    const int row_tile = (warp_tile / s.col_tiles) % s.row_tiles;
    const int od = warp_tile / (s.col_tiles * s.row_tiles);
    const int ow0 = min(col_tile * kCols, s.ow - kCols);
    const int oh0 = min(row_tile * kRows, s.oh - kRows);
    const int duplicate_rows = row_tile * kRows - oh0;  // owned by the previous row tile
    const int duplicate_cols = col_tile * kCols - ow0;  // owned by the previous column tile
    const float keep_lo = g >= duplicate_cols ? 1.f : 0.f;      // column ow0 + g
    const float keep_hi = g + 8 >= duplicate_cols ? 1.f : 0.f;  // column ow0 + g + 8

    float acc[kRows][2][4];
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

    const float* x_lane = x + n * s.sample_stride + ow0 + g + t;
    const int plane = s.h * s.w;
    for (int ci = 0; ci < s.cin; ++ci) {
#pragma unroll 1
      for (int kd = 0; kd < kKernel; ++kd) {
        const float* rows = x_lane + (ci * s.d + od + kd) * plane + oh0 * s.w;
        uint32_t lo[kInputRows], hi[kInputRows];  // columns g+t and g+8+t of each input row
#pragma unroll
        for (int j = 0; j < kInputRows; ++j) {
          lo[j] = to_tf32(__ldg(rows + j * s.w));
          hi[j] = to_tf32(__ldg(rows + j * s.w + 8));
        }
        const float2* w = packed + ((ci * kKernel + kd) * 2 * 2 * kParts) * 32 + lane;
        float2 b[2][2][kParts];
#pragma unroll
        for (int p = 0; p < 2; ++p)
#pragma unroll
          for (int nh = 0; nh < 2; ++nh)
#pragma unroll
            for (int part = 0; part < kParts; ++part) b[p][nh][part] = __ldg(w + ((p * 2 + nh) * kParts + part) * 32);
#pragma unroll
        for (int r = 0; r < kRows; ++r)
#pragma unroll
          for (int p = 0; p < 2; ++p) {
            const uint32_t a[4] = {lo[r + 2 * p], hi[r + 2 * p], lo[r + 2 * p + 1], hi[r + 2 * p + 1]};
#pragma unroll
            for (int nh = 0; nh < 2; ++nh)
#pragma unroll
              for (int part = kParts - 1; part >= 0; --part) mma_tf32(acc[r][nh], a, b[p][nh][part]);
          }
      }
    }

    // hardswish, then shifted sums per channel: the pivot is one of this thread's own values, so
    // sum((h - pivot)^2) does not cancel the way a plain sum of squares would when |mean| >> std.
    const int valid_rows = kRows - duplicate_rows;
#pragma unroll
    for (int nh = 0; nh < 2; ++nh)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pivot = hardswish(acc[kRows - 1][nh][2 + e]);
        float sum = 0.f, squares = 0.f;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float keep_row = r >= duplicate_rows ? 1.f : 0.f;
          const float d_lo = (hardswish(acc[r][nh][e]) - pivot) * (keep_row * keep_lo);
          const float d_hi = (hardswish(acc[r][nh][2 + e]) - pivot) * (keep_row * keep_hi);
          sum += d_lo + d_hi;
          squares = fmaf(d_lo, d_lo, fmaf(d_hi, d_hi, squares));
        }
        const float count = valid_rows * (keep_lo + keep_hi);
        if (count > 0.f)
          moments[nh][e] = {count, pivot + sum / count, fmaxf(squares - sum * (sum / count), 0.f)};
      }
  }

  // Lanes with the same t hold the same channels: merge over g (lanes t, t+4, ..., t+28) by
  // shuffle-down, then the warps in ascending order.
#pragma unroll
  for (int nh = 0; nh < 2; ++nh)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int offset = 16; offset >= 4; offset /= 2)
        moments[nh][e] = merge_moments(moments[nh][e], shuffle_down(moments[nh][e], offset));
      if (g == 0) warp_moments[warp][nh * 8 + 2 * t + e] = moments[nh][e];
    }
  __syncthreads();
  if (threadIdx.x < kCout) {
    Moments<float> m = warp_moments[0][threadIdx.x];
    for (int wi = 1; wi < kWarps; ++wi) m = merge_moments(m, warp_moments[wi][threadIdx.x]);
    partials[(n * s.tiles + tile) * kCout + threadIdx.x] = m;
  }
}

// TF32 rounding as cvt.rna does it (nearest, ties away from zero) on float32 bit patterns.
at::Tensor round_to_tf32(const at::Tensor& w) {
  return w.view(at::kInt).add(0x1000).bitwise_and(static_cast<int32_t>(0xFFFFE000u)).view(at::kFloat);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Launchers

bool tensorcore_k4_can_run(const FusedLayer& l, const at::Tensor& x) {
  const auto k = l.kernel();
  return k[0] == kKernel && k[1] == kKernel && k[2] == kKernel && l.out_channels() == kCout &&
         unsupported_reason(l).empty() && x.dim() == 5 && x.size(3) - kKernel + 1 >= kRows &&
         x.size(4) - kKernel + 1 >= kCols;
}

TensorcoreWeights pack_tensorcore_k4_weights(const FusedLayer& l, Precision precision) {
  const int64_t cin = l.in_channels();
  // (co = nh*8 + g, ci, kd, kh = 2p + q, kw = t) -> (ci, kd, p, nh, lane = 4g + t, q)
  const at::Tensor w = l.weight.contiguous().view({2, 8, cin, kKernel, 2, 2, kKernel})
                           .permute({2, 3, 4, 0, 1, 6, 5})
                           .reshape({cin, kKernel, 2, 2, 32, 2});
  const at::Tensor hi = round_to_tf32(w.contiguous());
  at::Tensor parts = hi.unsqueeze(4);  // (ci, kd, p, nh, part, lane, q)
  if (precision == Precision::kAccurate) parts = at::stack({hi, round_to_tf32((w - hi).contiguous())}, 4);
  TensorcoreWeights packed;
  packed.fragments = parts.contiguous();
  packed.parts = static_cast<int>(parts.size(4));
  packed.bias = l.bias.defined() ? l.bias.contiguous() : at::zeros({kCout}, w.options());
  return packed;
}

void launch_tensorcore_k4_moments(const at::Tensor& x, const TensorcoreWeights& packed, at::Tensor& partials,
                                  int tiles, cudaStream_t stream) {
  TcShape s{};
  s.cin = static_cast<int>(x.size(1));
  s.d = static_cast<int>(x.size(2));
  s.h = static_cast<int>(x.size(3));
  s.w = static_cast<int>(x.size(4));
  s.sample_stride = x.stride(0);
  s.od = s.d - kKernel + 1;
  s.oh = s.h - kKernel + 1;
  s.ow = s.w - kKernel + 1;
  s.row_tiles = (s.oh + kRows - 1) / kRows;
  s.col_tiles = (s.ow + kCols - 1) / kCols;
  s.warp_tiles = s.od * s.row_tiles * s.col_tiles;
  s.tiles = tiles;
  const long long blocks = x.size(0) * static_cast<long long>(tiles);
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "fused3d: batch ", x.size(0), " needs more blocks than one launch takes");
  const float* xp = x.data_ptr<float>();
  const auto* wp = reinterpret_cast<const float2*>(packed.fragments.data_ptr<float>());
  auto* out = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  if (packed.parts == 2)
    conv_k4_tensorcore_moments_kernel<2><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        xp, wp, packed.bias.data_ptr<float>(), s, out);
  else
    conv_k4_tensorcore_moments_kernel<1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        xp, wp, packed.bias.data_ptr<float>(), s, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

int tensorcore_k4_tiles(const at::Tensor& x) {
  const int64_t od = x.size(2) - kKernel + 1, oh = x.size(3) - kKernel + 1, ow = x.size(4) - kKernel + 1;
  const int64_t warp_tiles = od * ((oh + kRows - 1) / kRows) * ((ow + kCols - 1) / kCols);
  return static_cast<int>((warp_tiles + kWarps - 1) / kWarps);
}

}  // namespace fused3d
