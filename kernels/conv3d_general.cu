// The general kernel: conv3d -> bias -> hardswish -> per-(sample, channel) moments in float32 on
// CUDA cores, for every layer PyTorch's zero-padded Conv3d can be. The convolution output (B x Cout
// x OD x OH x OW floats: 716 MB at the standard batch) never reaches memory; the GroupNorm-mean
// epilogue (epilogue.cu) turns the moments into the (B, Cout) result.
//
// Math (moments.h): for each (n, c) the channel's spatial mean of h = hardswish(conv) and its
// centred second moment; the group statistics and the normalized spatial mean follow.
//
// Data layout: x is (B, Cin, D, H, W) in float32, float16 or bfloat16, contiguous; products and
// sums are float32 whatever the input dtype (the output is rounded to the input's dtype at the end,
// as PyTorch's dtype rules give). Weights are repacked into (conv groups x Cout-per-group tiles of
// 16 channels, Cin/groups*KD*KH*KW taps, 16) float32, once per model (the entry caches them), so
// that one tap's 16 output channels are four float4 loads that every lane of a warp reads at the
// same address. A tile never spans two conv groups: with few channels per group most of its 16
// lanes of work are padding, which is the price of one kernel for all groups.
//
// Work split: a "strip" is kPositionsPerThread consecutive output columns of one output row; a
// thread computes a strip for 16 output channels at once (64 accumulators), so each weight load
// feeds 4 FMAs and each input load 16. A block covers kStripsPerTile strips of one sample and writes
// one Moments per channel; blocks never touch each other's results (no atomics), and the epilogue
// merges tiles in ascending order: the output is bitwise deterministic.
//
// Limits: none on the conv settings (any stride, zero padding, dilation, Cin, Cout, kernel size,
// conv groups; an input row or column outside the input contributes 0, as zero padding would).
// Offsets within one sample are 32-bit (the entry checks Cin*D*H*W < 2^31); sample offsets 64-bit.
#include "conv3d_general.h"

#include "moments.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <limits>

namespace fused3d::general {

struct Traits {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kCoutTile = 16;           // output channels per pass: accumulators per position
  static constexpr int kPositionsPerThread = 4;  // consecutive output columns per thread
  static constexpr int kStripsPerThread = 2;     // strips per thread per tile
  static constexpr int kStripsPerTile = kThreads * kStripsPerThread;
  static_assert(kThreads % 32 == 0, "whole warps");
  static_assert(kCoutTile % 4 == 0, "a tap's weights are read as float4");
  static_assert(kCoutTile <= kThreads, "one thread per channel merges the warps' moments");
};

struct ConvShape {
  long long batch;
  long long sample_stride;  // Cin*D*H*W
  int cin;                  // input channels per conv group
  int d, h, w;
  int kd, kh, kw;
  int sd, sh, sw;  // stride
  int pd, ph, pw;  // zero padding
  int dd, dh, dw;  // dilation
  int od, oh, ow;
  int cout, cout_per_group, tiles_per_group, cout_tiles;
  int strips_per_row, strips, tiles;
};

// ------------------------------------------------------------------------------------------------
// CUDA kernels

__device__ __forceinline__ Moments<float> shuffle_down(const Moments<float>& m, int offset) {
  return {__shfl_down_sync(0xffffffffu, m.count, offset),
          __shfl_down_sync(0xffffffffu, m.mean, offset),
          __shfl_down_sync(0xffffffffu, m.m2, offset)};
}

// One block = one tile (Traits::kStripsPerTile strips) of one sample; writes partials[n][tile][0..Cout).
template <typename T>
__global__ void __launch_bounds__(Traits::kThreads)
    conv_hardswish_moments_kernel(const T* __restrict__ x, const float4* __restrict__ packed_w,
                                  const float* __restrict__ packed_bias, ConvShape s,
                                  Moments<float>* __restrict__ partials) {
  __shared__ Moments<float> warp_moments[Traits::kWarps][Traits::kCoutTile];
  const long long n = blockIdx.x / s.tiles;
  const int tile = blockIdx.x - n * s.tiles;
  const int taps = s.cin * s.kd * s.kh * s.kw;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  for (int ct = 0; ct < s.cout_tiles; ++ct) {
    const int conv_group = ct / s.tiles_per_group;
    const int first_channel = conv_group * s.cout_per_group + (ct - conv_group * s.tiles_per_group) * Traits::kCoutTile;
    const int tile_channels = min(Traits::kCoutTile, conv_group * s.cout_per_group + s.cout_per_group - first_channel);
    const T* xs = x + n * s.sample_stride + static_cast<long long>(conv_group) * s.cin * s.d * s.h * s.w;
    const float4* w_tile = packed_w + static_cast<size_t>(ct) * taps * (Traits::kCoutTile / 4);
    Moments<float> running[Traits::kCoutTile];
#pragma unroll
    for (int j = 0; j < Traits::kCoutTile; ++j) running[j] = {0.f, 0.f, 0.f};

    for (int i = 0; i < Traits::kStripsPerThread; ++i) {
      const int strip = tile * Traits::kStripsPerTile + i * Traits::kThreads + threadIdx.x;
      if (strip >= s.strips) break;
      const int row = strip / s.strips_per_row;  // od * OH + oh
      const int ow0 = (strip - row * s.strips_per_row) * Traits::kPositionsPerThread;
      const int od = row / s.oh;
      const int oh = row - od * s.oh;
      const int valid = min(Traits::kPositionsPerThread, s.ow - ow0);
      // Input coordinates of the first tap; columns past the row end repeat the last valid column
      // (in bounds) and are dropped from the statistics.
      const int id0 = od * s.sd - s.pd, ih0 = oh * s.sh - s.ph;
      int iw0[Traits::kPositionsPerThread];
#pragma unroll
      for (int p = 0; p < Traits::kPositionsPerThread; ++p) iw0[p] = min(ow0 + p, s.ow - 1) * s.sw - s.pw;

      float acc[Traits::kPositionsPerThread][Traits::kCoutTile];
#pragma unroll
      for (int j = 0; j < Traits::kCoutTile; ++j) {
        const float b = packed_bias[ct * Traits::kCoutTile + j];
#pragma unroll
        for (int p = 0; p < Traits::kPositionsPerThread; ++p) acc[p][j] = b;
      }

      const float4* w = w_tile;
      for (int ci = 0; ci < s.cin; ++ci)
        for (int kd = 0; kd < s.kd; ++kd) {
          const int id = id0 + kd * s.dd;
          if (static_cast<unsigned>(id) >= static_cast<unsigned>(s.d)) {  // a padding plane: adds 0
            w += s.kh * s.kw * (Traits::kCoutTile / 4);
            continue;
          }
          for (int kh = 0; kh < s.kh; ++kh) {
            const int ih = ih0 + kh * s.dh;
            if (static_cast<unsigned>(ih) >= static_cast<unsigned>(s.h)) {  // a padding row
              w += s.kw * (Traits::kCoutTile / 4);
              continue;
            }
            const T* x_row = xs + ((ci * s.d + id) * s.h + ih) * s.w;
            for (int kw = 0; kw < s.kw; ++kw, w += Traits::kCoutTile / 4) {
              float xv[Traits::kPositionsPerThread];
#pragma unroll
              for (int p = 0; p < Traits::kPositionsPerThread; ++p) {
                const int iw = iw0[p] + kw * s.dw;
                xv[p] = static_cast<unsigned>(iw) < static_cast<unsigned>(s.w) ? static_cast<float>(x_row[iw]) : 0.f;
              }
#pragma unroll
              for (int q = 0; q < Traits::kCoutTile / 4; ++q) {
                const float4 w4 = __ldg(w + q);
#pragma unroll
                for (int p = 0; p < Traits::kPositionsPerThread; ++p) {
                  acc[p][4 * q + 0] = fmaf(xv[p], w4.x, acc[p][4 * q + 0]);
                  acc[p][4 * q + 1] = fmaf(xv[p], w4.y, acc[p][4 * q + 1]);
                  acc[p][4 * q + 2] = fmaf(xv[p], w4.z, acc[p][4 * q + 2]);
                  acc[p][4 * q + 3] = fmaf(xv[p], w4.w, acc[p][4 * q + 3]);
                }
              }
            }
          }
        }

#pragma unroll
      for (int j = 0; j < Traits::kCoutTile; ++j) {
        float h[Traits::kPositionsPerThread];
#pragma unroll
        for (int p = 0; p < Traits::kPositionsPerThread; ++p) h[p] = hardswish(acc[p][j]);
        running[j] = merge_moments(running[j], moments_of(h, valid));
      }
    }

    // Fixed-order reductions: lanes by shuffle-down, then warps in ascending order.
#pragma unroll
    for (int j = 0; j < Traits::kCoutTile; ++j) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        running[j] = merge_moments(running[j], shuffle_down(running[j], offset));
      if (lane == 0) warp_moments[warp][j] = running[j];
    }
    __syncthreads();
    if (threadIdx.x < tile_channels) {
      Moments<float> warps[Traits::kWarps];
#pragma unroll
      for (int wi = 0; wi < Traits::kWarps; ++wi) warps[wi] = warp_moments[wi][threadIdx.x];
      partials[(n * s.tiles + tile) * s.cout + first_channel + threadIdx.x] = merge_all(warps);
    }
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

namespace {

// (Cout, Cin/G, KD, KH, KW) -> (G * tiles per group, taps, 16) float32, each group's channels
// zero-padded to whole tiles.
at::Tensor pack_weight_tiles(const at::Tensor& weight, int64_t conv_groups) {
  const int64_t cout = weight.size(0), per_group = cout / conv_groups;
  const int64_t padded = (per_group + Traits::kCoutTile - 1) / Traits::kCoutTile * Traits::kCoutTile;
  const at::Tensor w = weight.to(at::kFloat).reshape({conv_groups, per_group, -1});
  const at::Tensor tiles = at::constant_pad_nd(w, {0, 0, 0, padded - per_group})
                               .reshape({conv_groups, padded / Traits::kCoutTile, Traits::kCoutTile, w.size(2)});
  return tiles.permute({0, 1, 3, 2}).reshape({-1, w.size(2), Traits::kCoutTile}).contiguous();
}

at::Tensor pack_bias(const at::Tensor& bias, int64_t cout, int64_t conv_groups, const at::Device& device) {
  const int64_t per_group = cout / conv_groups;
  const int64_t padded = (per_group + Traits::kCoutTile - 1) / Traits::kCoutTile * Traits::kCoutTile;
  const at::Tensor b = bias.defined() ? bias.to(at::kFloat).reshape({conv_groups, per_group})
                                      : at::zeros({conv_groups, per_group}, at::TensorOptions(device));
  return at::constant_pad_nd(b, {0, padded - per_group}).reshape({-1}).contiguous();
}

template <typename T>
void launch_conv_hardswish_moments(const at::Tensor& x, const at::Tensor& packed_w,
                                   const at::Tensor& packed_bias, const ConvShape& s,
                                   at::Tensor& partials, cudaStream_t stream) {
  const long long blocks = s.batch * s.tiles;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "fused3d: batch ", s.batch,
              " needs more blocks than one launch takes");
  conv_hardswish_moments_kernel<T><<<static_cast<unsigned>(blocks), Traits::kThreads, 0, stream>>>(
      x.data_ptr<T>(), reinterpret_cast<const float4*>(packed_w.data_ptr<float>()),
      packed_bias.data_ptr<float>(), s, reinterpret_cast<Moments<float>*>(partials.data_ptr<float>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

ConvShape conv_shape(const at::Tensor& x, const FusedLayer& layer) {
  const ConvSpatial c = conv_spatial(x, layer);
  const auto narrow = [](int64_t v) { return static_cast<int>(v); };
  ConvShape s{};
  s.batch = x.size(0);
  s.sample_stride = x.stride(0);
  s.cin = narrow(layer.in_channels());
  s.d = c.d;
  s.h = c.h;
  s.w = c.w;
  s.kd = c.kd;
  s.kh = c.kh;
  s.kw = c.kw;
  s.sd = c.sd;
  s.sh = c.sh;
  s.sw = c.sw;
  s.pd = c.pd;
  s.ph = c.ph;
  s.pw = c.pw;
  s.dd = c.dd;
  s.dh = c.dh;
  s.dw = c.dw;
  s.od = c.od;
  s.oh = c.oh;
  s.ow = c.ow;
  s.cout = narrow(layer.out_channels());
  s.cout_per_group = narrow(layer.out_channels() / layer.conv_groups);
  s.tiles_per_group = (s.cout_per_group + Traits::kCoutTile - 1) / Traits::kCoutTile;
  s.cout_tiles = narrow(layer.conv_groups) * s.tiles_per_group;
  s.strips_per_row = (s.ow + Traits::kPositionsPerThread - 1) / Traits::kPositionsPerThread;
  s.strips = s.od * s.oh * s.strips_per_row;
  s.tiles = (s.strips + Traits::kStripsPerTile - 1) / Traits::kStripsPerTile;
  return s;
}

}  // namespace

GeneralWeights pack_weights(const FusedLayer& layer) {
  return {pack_weight_tiles(layer.weight, layer.conv_groups),
          pack_bias(layer.bias, layer.out_channels(), layer.conv_groups, layer.weight.device())};
}

int tiles(const at::Tensor& x, const FusedLayer& layer) { return conv_shape(x, layer).tiles; }

void launch(const at::Tensor& x, const FusedLayer& layer, const GeneralWeights& weights, at::Tensor& partials,
            cudaStream_t stream) {
  const ConvShape s = conv_shape(x, layer);
  switch (x.scalar_type()) {
    case at::kFloat: launch_conv_hardswish_moments<float>(x, weights.weight, weights.bias, s, partials, stream); break;
    case at::kHalf: launch_conv_hardswish_moments<at::Half>(x, weights.weight, weights.bias, s, partials, stream); break;
    case at::kBFloat16:
      launch_conv_hardswish_moments<at::BFloat16>(x, weights.weight, weights.bias, s, partials, stream);
      break;
    default: TORCH_CHECK(false, "fused3d: no general kernel for dtype ", dtype_name(x.scalar_type()));
  }
}

}  // namespace fused3d::general
