// The depthwise kernel: conv3d -> bias -> hardswish -> per-(sample, channel) moments in float32 on
// CUDA cores, for layers whose conv groups read one input channel each (Cin/G = 1) and write up to
// four output channels. conv3d_depthwise.h has the tiling.
//
// Why CUDA cores: with one input channel per group the GEMM of the implicit-GEMM kernel has
// K = taps (27 for kernel 3) and N = the group's channels (1 for depthwise) padded to an MMA's 8,
// so seven eighths of its tensor-core work and all of its gather's index arithmetic feed padding.
// Here each input element is read from global memory about once per tile (the footprint), and per
// tap a thread reads the tap's weights once (one broadcast load) and its kDepth inputs from shared
// memory for kDepth x multiplier FMAs: the loop is bound by shared-memory loads, ~1.1 per FMA.
// float32 products and sums: the result is as accurate as libtorch's float32 conv in both modes.
//
// A block of kThreads threads takes one tile of one sample and conv group: it fills the tile's
// footprint in shared memory (float32 inputs by cp.async, 16-bit ones converted on the way: the
// fill is the only code that reads x, so one instance takes all three types),
// computes its thread's kDepth positions for every channel of the group, adds the bias, applies
// hardswish and merges the valid positions' (count, mean, M2) per channel: lanes by shuffles, then
// warps in ascending order, one Moments per channel of the tile. No atomics: bitwise deterministic.
//
// Limits: Cin/G = 1, Cout/G <= 4, a single plane's footprint within kMaxSharedBytes (can_run);
// offsets within one sample 32-bit (the entry checks Cin*D*H*W < 2^31).
#include "conv3d_depthwise.h"

#include "moments.h"
#include "ptx.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <limits>
#include <type_traits>

namespace fused3d::depthwise {

// x's element type: only the footprint's fill reads it, so one kernel serves all three.
enum class InputType : int { kFloat32, kFloat16, kBFloat16 };

struct Params {
  const float4* weight;  // (G, taps) float4s: a tap's weights for the group's channels
  const float4* bias;    // (G) float4s
  Moments<float>* partials;
  long long sample_stride;  // Cin * D * H * W
  int channel_stride;       // D * H * W
  int cout, multiplier;     // multiplier: output channels per conv group
  InputType input;
  Tiling t;
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ Moments<float> shuffle_down(const Moments<float>& m, int offset) {
  return {__shfl_down_sync(0xffffffffu, m.count, offset), __shfl_down_sync(0xffffffffu, m.mean, offset),
          __shfl_down_sync(0xffffffffu, m.m2, offset)};
}

// The explicit conversions: PyTorch's extension builds turn the implicit ones off
// (__CUDA_NO_HALF_CONVERSIONS__).
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// The footprint of one tile: element (fz, fy, fx) from x's channel, 0 outside the input. Each warp
// fills whole footprint rows, its lanes along the row (coalesced where the stride along W is 1).
template <typename T>
__device__ __forceinline__ void fill_footprint(const T* __restrict__ channel, const Tiling& t, const TileOrigin& o,
                                               float* footprint) {
  const int z0 = o.od * t.sd - t.pd, y0 = o.oh * t.sh - t.ph, x0 = o.ow * t.sw - t.pw;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int row = warp; row < t.fd * t.fh; row += Traits::kThreads / 32) {
    const int fz = row / t.fh, fy = row - fz * t.fh;
    const int z = z0 + fz, y = y0 + fy;
    const bool row_inside = static_cast<unsigned>(z) < static_cast<unsigned>(t.d) &&
                            static_cast<unsigned>(y) < static_cast<unsigned>(t.h);
    const T* src = channel + (z * t.h + y) * t.w;  // formed only where the row is inside
    float* dst = footprint + row * t.fw;
    for (int fx = lane; fx < t.fw; fx += 32) {
      const int xi = x0 + fx;
      const bool inside = row_inside && static_cast<unsigned>(xi) < static_cast<unsigned>(t.w);
      if constexpr (std::is_same_v<T, float>) {
        if (inside)
          ptx::cp_async4(dst + fx, src + xi);
        else
          dst[fx] = 0.f;
      } else {
        dst[fx] = inside ? to_float(src[xi]) : 0.f;
      }
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
  }
}

// grid: (B * tiles, G). kDepth output planes per thread, kM output channels per conv group.
template <int kDepth, int kM>
__global__ void __launch_bounds__(Traits::kThreads) depthwise_moments_kernel(const void* __restrict__ x, const Params p) {
  extern __shared__ __align__(16) float shared[];
  __shared__ Moments<float> warp_moments[Traits::kThreads / 32][kM];
  ptx::launch_dependents();  // the epilogue grid may be scheduled; it waits for this one to end
  const Tiling& t = p.t;
  const int taps = t.kd * t.kh * t.kw;
  float4* w_s = reinterpret_cast<float4*>(shared);  // [taps] float4s
  float* footprint = shared + 4 * taps;

  const long long n = blockIdx.x / t.tiles;
  const int tile = static_cast<int>(blockIdx.x - n * t.tiles);
  const int g = blockIdx.y;
  const TileOrigin o = tile_origin(t, tile);
  for (int i = threadIdx.x; i < taps; i += Traits::kThreads) w_s[i] = p.weight[static_cast<size_t>(g) * taps + i];
  const long long channel = n * p.sample_stride + static_cast<long long>(g) * p.channel_stride;
  switch (p.input) {
    case InputType::kFloat32: fill_footprint(static_cast<const float*>(x) + channel, t, o, footprint); break;
    case InputType::kFloat16: fill_footprint(static_cast<const __half*>(x) + channel, t, o, footprint); break;
    case InputType::kBFloat16: fill_footprint(static_cast<const __nv_bfloat16*>(x) + channel, t, o, footprint); break;
  }
  __syncthreads();

  const int r = threadIdx.x / t.columns, c = threadIdx.x - r * t.columns;
  const float4 b = p.bias[g];
  const float bias[4] = {b.x, b.y, b.z, b.w};
  float acc[kDepth][kM];
#pragma unroll
  for (int j = 0; j < kDepth; ++j)
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[j][m] = bias[m];

  const float* base = footprint + footprint_offset(t, 0, r, c, 0, 0, 0);
  const int plane_step = t.sd * t.fh * t.fw;  // from output plane j to j + 1
  int tap = 0;
  for (int kd = 0; kd < t.kd; ++kd)
    for (int kh = 0; kh < t.kh; ++kh) {
      const float* row = base + (kd * t.dd * t.fh + kh * t.dh) * t.fw;
      for (int kw = 0; kw < t.kw; ++kw, ++tap) {
        float wv[kM];
        if constexpr (kM == 1) {
          wv[0] = reinterpret_cast<const float*>(w_s)[4 * tap];
        } else if constexpr (kM == 2) {
          const float2 w2 = reinterpret_cast<const float2*>(w_s)[2 * tap];
          wv[0] = w2.x;
          wv[1] = w2.y;
        } else {
          const float4 w4 = w_s[tap];
          wv[0] = w4.x;
          wv[1] = w4.y;
          wv[2] = w4.z;
          wv[3] = w4.w;
        }
        const float* in = row + kw * t.dw;
#pragma unroll
        for (int j = 0; j < kDepth; ++j) {
          const float v = in[j * plane_step];
#pragma unroll
          for (int m = 0; m < kM; ++m) acc[j][m] = fmaf(v, wv[m], acc[j][m]);
        }
      }
    }

  // The thread's positions that exist are a prefix of its kDepth planes.
  const bool column_exists = o.oh + r < t.oh && o.ow + c < t.ow;
  const int valid = column_exists ? min(kDepth, t.od - o.od) : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    float h[kDepth];
#pragma unroll
    for (int j = 0; j < kDepth; ++j) h[j] = hardswish(acc[j][m]);
    Moments<float> mine = moments_of(h, valid);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) mine = merge_moments(mine, shuffle_down(mine, offset));
    if (lane == 0) warp_moments[warp][m] = mine;
  }
  __syncthreads();
  if (threadIdx.x < p.multiplier) {
    Moments<float> warps[Traits::kThreads / 32];
#pragma unroll
    for (int wi = 0; wi < Traits::kThreads / 32; ++wi) warps[wi] = warp_moments[wi][threadIdx.x];
    p.partials[(n * t.tiles + tile) * p.cout + g * p.multiplier + threadIdx.x] = merge_all(warps);
  }
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

namespace {

int multiplier_of(const FusedLayer& layer) { return static_cast<int>(layer.out_channels() / layer.conv_groups); }

template <int kDepth, int kM>
void launch_kernel(const at::Tensor& x, const Params& p, long long batch, int groups, cudaStream_t stream) {
  const long long blocks = batch * p.t.tiles;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "fused3d: batch ", batch,
              " needs more blocks than one launch takes");
  TORCH_CHECK(groups <= 65535, "fused3d: ", groups, " conv groups exceed one launch's grid");
  const size_t smem = shared_bytes(p.t);
  auto* kernel = depthwise_moments_kernel<kDepth, kM>;
  if (smem > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kMaxSharedBytes));
  kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(groups)), Traits::kThreads, smem, stream>>>(
      x.data_ptr(), p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int kDepth>
void launch_for_depth(const at::Tensor& x, const Params& p, long long batch, int groups, cudaStream_t stream) {
  if (p.multiplier == 1)
    launch_kernel<kDepth, 1>(x, p, batch, groups, stream);
  else if (p.multiplier == 2)
    launch_kernel<kDepth, 2>(x, p, batch, groups, stream);
  else
    launch_kernel<kDepth, 4>(x, p, batch, groups, stream);
}

}  // namespace

Tiling tiling(const at::Tensor& x, const FusedLayer& layer, int depth) {
  Tiling t{};
  static_cast<ConvSpatial&>(t) = conv_spatial(x, layer);
  t.depth = depth;
  // Narrow outputs take narrower tiles, so that a block's threads have positions to compute.
  t.columns = t.ow > 16 ? 32 : t.ow > 8 ? 16 : 8;
  t.rows = Traits::kThreads / t.columns;
  const auto extent = [](int tile, int stride, int kernel, int dilation) {
    return (tile - 1) * stride + (kernel - 1) * dilation + 1;
  };
  t.fd = extent(t.depth, t.sd, t.kd, t.dd);
  t.fh = extent(t.rows, t.sh, t.kh, t.dh);
  t.fw = extent(t.columns, t.sw, t.kw, t.dw);
  t.tiles_d = (t.od + t.depth - 1) / t.depth;
  t.tiles_h = (t.oh + t.rows - 1) / t.rows;
  t.tiles_w = (t.ow + t.columns - 1) / t.columns;
  t.tiles = t.tiles_d * t.tiles_h * t.tiles_w;
  return t;
}

Tiling tiling(const at::Tensor& x, const FusedLayer& layer) {
  for (const int depth : {Traits::kDeepTile, Traits::kHalfTile}) {
    const Tiling t = tiling(x, layer, depth);
    if (t.od >= depth && shared_bytes(t) <= Traits::kMaxSharedBytes) return t;
  }
  return tiling(x, layer, 1);
}

bool can_run(const at::Tensor& x, const FusedLayer& layer) {
  const at::ScalarType dtype = x.scalar_type();
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) return false;
  if (layer.in_channels() != 1 || multiplier_of(layer) > Traits::kMaxMultiplier) return false;
  // Extents whose footprint products could overflow are left to the implicit-GEMM kernel.
  const auto o = conv_output_spatial(x, layer);
  for (int i = 0; i < 3; ++i)
    if (x.size(2 + i) > (1 << 20) || layer.stride[i] > 1024 || layer.dilation[i] * layer.kernel()[i] > 4096 || o[i] < 1)
      return false;
  return shared_bytes(tiling(x, layer, 1)) <= Traits::kMaxSharedBytes;
}

DepthwiseWeights pack_weights(const FusedLayer& layer) {
  const int64_t groups = layer.conv_groups, m = multiplier_of(layer);
  const at::Tensor w = layer.weight.to(at::kFloat).reshape({groups, m, -1});  // (G, m, taps)
  const int64_t pad = Traits::kMaxMultiplier - m;
  DepthwiseWeights packed;
  packed.weight = at::constant_pad_nd(w.transpose(1, 2), {0, pad}).contiguous();  // (G, taps, 4)
  const at::Tensor b = layer.bias.defined()
                           ? layer.bias.to(at::kFloat).reshape({groups, m})
                           : at::zeros({groups, m}, layer.weight.options().dtype(at::kFloat));
  packed.bias = at::constant_pad_nd(b, {0, pad}).contiguous();
  return packed;
}

int tiles(const at::Tensor& x, const FusedLayer& layer) { return tiling(x, layer).tiles; }

void launch(const at::Tensor& x, const FusedLayer& layer, const DepthwiseWeights& weights, at::Tensor& partials,
            cudaStream_t stream) {
  Params p{};
  p.weight = reinterpret_cast<const float4*>(weights.weight.data_ptr<float>());
  p.bias = reinterpret_cast<const float4*>(weights.bias.data_ptr<float>());
  p.partials = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  p.sample_stride = x.stride(0);
  p.channel_stride = static_cast<int>(x.stride(1));
  p.cout = static_cast<int>(layer.out_channels());
  p.multiplier = multiplier_of(layer);
  p.t = tiling(x, layer);
  const long long batch = x.size(0);
  const int groups = static_cast<int>(layer.conv_groups);
  switch (x.scalar_type()) {
    case at::kFloat: p.input = InputType::kFloat32; break;
    case at::kHalf: p.input = InputType::kFloat16; break;
    case at::kBFloat16: p.input = InputType::kBFloat16; break;
    default: TORCH_CHECK(false, "fused3d: no depthwise kernel for dtype ", dtype_name(x.scalar_type()));
  }
  static_assert(Traits::kDeepTile == 8 && Traits::kHalfTile == 4, "the instances below");
  switch (p.t.depth) {
    case 8: launch_for_depth<8>(x, p, batch, groups, stream); break;
    case 4: launch_for_depth<4>(x, p, batch, groups, stream); break;
    default: launch_for_depth<1>(x, p, batch, groups, stream);
  }
}

}  // namespace fused3d::depthwise
