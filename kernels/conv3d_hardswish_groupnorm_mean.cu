// Fused conv3d -> bias -> hardswish -> per-(sample, channel) moments, then the GroupNorm-mean
// epilogue. The convolution output (B x Cout x OD x OH x OW floats: 716 MB at the standard batch)
// never reaches memory.
//
// Math (see moments.h): for each (n, c) we need the channel's spatial mean of h = hardswish(conv)
// and its centred second moment; the group statistics and the normalized spatial mean follow.
//
// Data layout: x is (B, Cin, D, H, W) in float32, float16 or bfloat16, made contiguous at the
// entry; products and sums are float32 whatever the input dtype (the output is rounded to the
// input's dtype at the end, as PyTorch's dtype rules give). Weights are repacked into
// (conv groups x Cout-per-group tiles of 16 channels, Cin/groups*KD*KH*KW taps, 16) float32, once per
// model (cached below), so that one tap's 16 output channels are four float4 loads that every lane
// of a warp reads at the same address. A tile never spans two conv groups: with few channels per
// group most of its 16 lanes of work are padding, which is the price of one kernel for all groups.
//
// Work split: a "strip" is kPositionsPerThread consecutive output columns of one output row; a
// thread computes a strip for 16 output channels at once (64 accumulators), so each weight load
// feeds 4 FMAs and each input load 16. A block covers kStripsPerTile strips of one sample and writes
// one Moments per channel; blocks never touch each other's results (no atomics), and the epilogue
// merges tiles in ascending order: the output is bitwise deterministic.
//
// Conv settings: any stride, zero padding and dilation; an input row or column outside the input
// (padding) contributes 0, as the zero-padded input would. Any Cin, Cout, kernel size, conv groups.
// Offsets within one sample are 32-bit (checked: Cin*D*H*W < 2^31); sample offsets are 64-bit.
//
// The entry below picks the tensor-core fast path (conv3d_k4_tensorcore.cu) when it can run the
// layer and this general kernel otherwise; both feed the same epilogue.
#include "conv3d_k4_tensorcore.h"
#include "fused_layer.h"
#include "moments.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <deque>
#include <limits>
#include <mutex>

namespace fused3d {
// Named rather than anonymous: the Python extension (tools/fused3d_torch.py) compiles both .cu
// files as one translation unit.
namespace general_kernel {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kCoutTile = 16;           // output channels per pass: accumulators per position
constexpr int kPositionsPerThread = 4;  // consecutive output columns per thread
constexpr int kStripsPerThread = 2;     // strips per thread per tile
constexpr int kStripsPerTile = kThreads * kStripsPerThread;
constexpr int kEpilogueThreads = 256;  // 8 (sample, group) pairs (a warp each) per block
static_assert(kThreads % 32 == 0, "whole warps");
static_assert(kEpilogueThreads % 32 == 0, "the epilogue runs whole warps");
static_assert(kCoutTile % 4 == 0, "a tap's weights are read as float4");
static_assert(kCoutTile <= kThreads, "one thread per channel merges the warps' moments");

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

// One block = one tile (kStripsPerTile strips) of one sample; writes partials[n][tile][0..Cout).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_hardswish_moments_kernel(const T* __restrict__ x, const float4* __restrict__ packed_w,
                                  const float* __restrict__ packed_bias, ConvShape s,
                                  Moments<float>* __restrict__ partials) {
  __shared__ Moments<float> warp_moments[kWarps][kCoutTile];
  const long long n = blockIdx.x / s.tiles;
  const int tile = blockIdx.x - n * s.tiles;
  const int taps = s.cin * s.kd * s.kh * s.kw;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  for (int ct = 0; ct < s.cout_tiles; ++ct) {
    const int conv_group = ct / s.tiles_per_group;
    const int first_channel = conv_group * s.cout_per_group + (ct - conv_group * s.tiles_per_group) * kCoutTile;
    const int tile_channels = min(kCoutTile, conv_group * s.cout_per_group + s.cout_per_group - first_channel);
    const T* xs = x + n * s.sample_stride + static_cast<long long>(conv_group) * s.cin * s.d * s.h * s.w;
    const float4* w_tile = packed_w + static_cast<size_t>(ct) * taps * (kCoutTile / 4);
    Moments<float> running[kCoutTile];
#pragma unroll
    for (int j = 0; j < kCoutTile; ++j) running[j] = {0.f, 0.f, 0.f};

    for (int i = 0; i < kStripsPerThread; ++i) {
      const int strip = tile * kStripsPerTile + i * kThreads + threadIdx.x;
      if (strip >= s.strips) break;
      const int row = strip / s.strips_per_row;  // od * OH + oh
      const int ow0 = (strip - row * s.strips_per_row) * kPositionsPerThread;
      const int od = row / s.oh;
      const int oh = row - od * s.oh;
      const int valid = min(kPositionsPerThread, s.ow - ow0);
      // Input coordinates of the first tap; columns past the row end repeat the last valid column
      // (in bounds) and are dropped from the statistics.
      const int id0 = od * s.sd - s.pd, ih0 = oh * s.sh - s.ph;
      int iw0[kPositionsPerThread];
#pragma unroll
      for (int p = 0; p < kPositionsPerThread; ++p) iw0[p] = min(ow0 + p, s.ow - 1) * s.sw - s.pw;

      float acc[kPositionsPerThread][kCoutTile];
#pragma unroll
      for (int j = 0; j < kCoutTile; ++j) {
        const float b = packed_bias[ct * kCoutTile + j];
#pragma unroll
        for (int p = 0; p < kPositionsPerThread; ++p) acc[p][j] = b;
      }

      const float4* w = w_tile;
      for (int ci = 0; ci < s.cin; ++ci)
        for (int kd = 0; kd < s.kd; ++kd) {
          const int id = id0 + kd * s.dd;
          if (static_cast<unsigned>(id) >= static_cast<unsigned>(s.d)) {  // a padding plane: adds 0
            w += s.kh * s.kw * (kCoutTile / 4);
            continue;
          }
          for (int kh = 0; kh < s.kh; ++kh) {
            const int ih = ih0 + kh * s.dh;
            if (static_cast<unsigned>(ih) >= static_cast<unsigned>(s.h)) {  // a padding row
              w += s.kw * (kCoutTile / 4);
              continue;
            }
            const T* x_row = xs + ((ci * s.d + id) * s.h + ih) * s.w;
            for (int kw = 0; kw < s.kw; ++kw, w += kCoutTile / 4) {
              float xv[kPositionsPerThread];
#pragma unroll
              for (int p = 0; p < kPositionsPerThread; ++p) {
                const int iw = iw0[p] + kw * s.dw;
                xv[p] = static_cast<unsigned>(iw) < static_cast<unsigned>(s.w) ? static_cast<float>(x_row[iw]) : 0.f;
              }
#pragma unroll
              for (int q = 0; q < kCoutTile / 4; ++q) {
                const float4 w4 = __ldg(w + q);
#pragma unroll
                for (int p = 0; p < kPositionsPerThread; ++p) {
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
      for (int j = 0; j < kCoutTile; ++j) {
        float h[kPositionsPerThread];
#pragma unroll
        for (int p = 0; p < kPositionsPerThread; ++p) h[p] = hardswish(acc[p][j]);
        running[j] = merge_moments(running[j], moments_of(h, valid));
      }
    }

    // Fixed-order reductions: lanes by shuffle-down, then warps in ascending order.
#pragma unroll
    for (int j = 0; j < kCoutTile; ++j) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        running[j] = merge_moments(running[j], shuffle_down(running[j], offset));
      if (lane == 0) warp_moments[warp][j] = running[j];
    }
    __syncthreads();
    if (threadIdx.x < tile_channels) {
      Moments<float> warps[kWarps];
#pragma unroll
      for (int wi = 0; wi < kWarps; ++wi) warps[wi] = warp_moments[wi][threadIdx.x];
      partials[(n * s.tiles + tile) * s.cout + first_channel + threadIdx.x] = merge_all(warps);
    }
    __syncthreads();
  }
}

// One warp per (n, group) (moments.h: the lanes split the sample's tiles).
__global__ void groupnorm_mean_epilogue_kernel(EpilogueParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the moments kernel (launch_epilogue): wait for it to
  // complete and its partials to be visible.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const long long i = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (i >= p.batch * p.groups) return;  // whole warps: blockDim.x is a multiple of 32
  groupnorm_mean_epilogue_lanes(p, i);
}

// The same warp per (sample, group), lanes split over the group's channels and the tiles
// (moments.h), where a group's channel count is a power of two up to 32 (the standard layer's 4):
// 14.0 -> 7.5 us at the standard batch (ncu; tf32 0.237 -> 0.229 ms, RECORD.md, run 87).
template <int kPerGroup>
__global__ void groupnorm_mean_epilogue_warp_kernel(EpilogueParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // as the kernel above
#endif
  const long long i = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (i >= p.batch * p.groups) return;  // whole warps: blockDim.x is a multiple of 32
  groupnorm_mean_epilogue_warp<kPerGroup>(p, i);
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

// (Cout, Cin/G, KD, KH, KW) -> (G * tiles per group, taps, kCoutTile) float32, each group's channels
// zero-padded to whole tiles.
at::Tensor pack_weights(const at::Tensor& weight, int64_t conv_groups) {
  const int64_t cout = weight.size(0), per_group = cout / conv_groups;
  const int64_t padded = (per_group + kCoutTile - 1) / kCoutTile * kCoutTile;
  const at::Tensor w = weight.to(at::kFloat).reshape({conv_groups, per_group, -1});
  const at::Tensor tiles = at::constant_pad_nd(w, {0, 0, 0, padded - per_group})
                               .reshape({conv_groups, padded / kCoutTile, kCoutTile, w.size(2)});
  return tiles.permute({0, 1, 3, 2}).reshape({-1, w.size(2), kCoutTile}).contiguous();
}

at::Tensor pack_bias(const at::Tensor& bias, int64_t cout, int64_t conv_groups, const at::Device& device) {
  const int64_t per_group = cout / conv_groups;
  const int64_t padded = (per_group + kCoutTile - 1) / kCoutTile * kCoutTile;
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
  conv_hardswish_moments_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      x.data_ptr<T>(), reinterpret_cast<const float4*>(packed_w.data_ptr<float>()),
      packed_bias.data_ptr<float>(), s, reinterpret_cast<Moments<float>*>(partials.data_ptr<float>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_epilogue(const EpilogueParams& p, cudaStream_t stream) {
  const long long threads = p.batch * p.groups * 32;  // a warp per (sample, group)
  void (*kernel)(EpilogueParams) = groupnorm_mean_epilogue_kernel;
  switch (p.channels / p.groups) {
    case 1: kernel = groupnorm_mean_epilogue_warp_kernel<1>; break;
    case 2: kernel = groupnorm_mean_epilogue_warp_kernel<2>; break;
    case 4: kernel = groupnorm_mean_epilogue_warp_kernel<4>; break;
    case 8: kernel = groupnorm_mean_epilogue_warp_kernel<8>; break;
    case 16: kernel = groupnorm_mean_epilogue_warp_kernel<16>; break;
    case 32: kernel = groupnorm_mean_epilogue_warp_kernel<32>; break;
    default: break;  // lanes over tiles only
  }
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>((threads + kEpilogueThreads - 1) / kEpilogueThreads));
  config.blockDim = dim3(kEpilogueThreads);
  config.stream = stream;
  // Programmatic dependent launch (sm_90): the epilogue is scheduled while the moments kernel
  // finishes and waits for it in griddepcontrol.wait, instead of starting only after it has ended
  // (RECORD.md, run 23).
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = at::cuda::getCurrentDeviceProperties()->major >= 9 ? 1 : 0;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, p));
}


// Packed weights are cached per model: repacking costs a handful of small launches (~20 us), as
// much as the whole B=1 forward. An entry holds a reference to the weight and bias it was made
// from, so their storage cannot be reused by another tensor while cached, and their version
// counters catch in-place changes.
struct PackedEntry {
  at::Tensor weight, bias;
  int64_t weight_version, bias_version;
  int64_t conv_groups;
  Precision precision;
  bool tensorcore;
  TensorcoreWeights tc;          // tensor-core path
  at::Tensor general_w, general_b;  // general path
};

bool same_source(const PackedEntry& e, const FusedLayer& l, Precision precision, bool tensorcore) {
  const bool same_bias = e.bias.defined() ? (l.bias.defined() && e.bias.is_same(l.bias) &&
                                             e.bias_version == l.bias._version())
                                          : !l.bias.defined();
  return e.tensorcore == tensorcore && e.precision == precision && e.conv_groups == l.conv_groups &&
         e.weight.is_same(l.weight) &&
         e.weight_version == l.weight._version() && same_bias;
}

PackedEntry packed_weights(const FusedLayer& l, Precision precision, bool tensorcore) {
  constexpr size_t kCacheEntries = 8;
  static std::mutex mutex;
  static std::deque<PackedEntry> cache;  // most recent first
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (const PackedEntry& e : cache)
      if (same_source(e, l, precision, tensorcore)) return e;
  }
  PackedEntry e{l.weight, l.bias, l.weight._version(), l.bias.defined() ? l.bias._version() : 0, l.conv_groups, precision, tensorcore, {}, {}, {}};
  if (tensorcore) {
    e.tc = pack_tensorcore_k4_weights(l, precision);
  } else {
    e.general_w = pack_weights(l.weight, l.conv_groups);
    e.general_b = pack_bias(l.bias, l.out_channels(), l.conv_groups, l.weight.device());
  }
  std::lock_guard<std::mutex> lock(mutex);
  cache.push_front(e);
  if (cache.size() > kCacheEntries) cache.pop_back();
  return e;
}

ConvShape conv_shape(const at::Tensor& x, const FusedLayer& layer) {
  const auto k = layer.kernel();
  const auto o = conv_output_spatial(x, layer);
  const auto narrow = [](int64_t v) { return static_cast<int>(v); };
  ConvShape s{};
  s.batch = x.size(0);
  s.sample_stride = x.stride(0);
  s.cin = narrow(layer.in_channels());
  s.d = narrow(x.size(2));
  s.h = narrow(x.size(3));
  s.w = narrow(x.size(4));
  s.kd = narrow(k[0]);
  s.kh = narrow(k[1]);
  s.kw = narrow(k[2]);
  s.sd = narrow(layer.stride[0]);
  s.sh = narrow(layer.stride[1]);
  s.sw = narrow(layer.stride[2]);
  s.pd = narrow(layer.padding[0]);
  s.ph = narrow(layer.padding[1]);
  s.pw = narrow(layer.padding[2]);
  s.dd = narrow(layer.dilation[0]);
  s.dh = narrow(layer.dilation[1]);
  s.dw = narrow(layer.dilation[2]);
  s.od = narrow(o[0]);
  s.oh = narrow(o[1]);
  s.ow = narrow(o[2]);
  s.cout = narrow(layer.out_channels());
  s.cout_per_group = narrow(layer.out_channels() / layer.conv_groups);
  s.tiles_per_group = (s.cout_per_group + kCoutTile - 1) / kCoutTile;
  s.cout_tiles = narrow(layer.conv_groups) * s.tiles_per_group;
  s.strips_per_row = (s.ow + kPositionsPerThread - 1) / kPositionsPerThread;
  s.strips = s.od * s.oh * s.strips_per_row;
  s.tiles = (s.strips + kStripsPerTile - 1) / kStripsPerTile;
  return s;
}

}  // namespace general_kernel


// ------------------------------------------------------------------------------------------------
// Entry: checks (shapes in the messages), then the launches on the current stream: moments kernel
// and epilogue kernel, or for the tensor-core path at B = 1 one kernel that does both.

std::string fused_cuda_kernel_name(const FusedLayer& layer, const at::Tensor& x, Precision precision) {
  using namespace general_kernel;  // this file's internals
  if (!tensorcore_k4_can_run(layer, x, precision))
    return x.scalar_type() == at::kFloat ? "general (float32 CUDA cores)"
                                         : "general (" + dtype_name(x.scalar_type()) + " in, float32 CUDA cores)";
  const std::string name =
      precision == Precision::kAccurate
          ? "tensor-core k4, accurate (x fp16, weights split hi+lo fp16; TF32 where x is out of fp16 range)"
          : "tensor-core k4, tf32 (x and weights fp16, 11 significant bits as TF32; TF32 where x is out of fp16 range)";
  if (tensorcore_k4_runs_planes_kernel(x)) return name + "; wgmma planes kernel";
  return tensorcore_k4_runs_epilogue(x.size(0)) ? name + "; epilogue in the same kernel" : name;
}

void fused_forward_cuda_out(const at::Tensor& input, const FusedLayer& layer, Precision precision, at::Tensor& out) {
  using namespace general_kernel;  // this file's internals
  const std::string malformed = malformed_reason(layer);
  TORCH_CHECK(malformed.empty(), "fused3d: ", malformed);
  const std::string unsupported = unsupported_reason(layer);
  TORCH_CHECK(unsupported.empty(), "fused3d: ", unsupported);
  const std::string mismatch = input_mismatch_reason(input, layer);
  TORCH_CHECK(mismatch.empty(), "fused3d: ", mismatch);
  TORCH_CHECK(input.is_cuda() && layer.weight.device() == input.device(),
              "fused3d: input and weights must be on the same CUDA device, got ", input.device(),
              " and ", layer.weight.device());
  const c10::cuda::CUDAGuard guard(input.device());

  const at::Tensor x = input.contiguous();
  const int64_t batch = x.size(0), cout = layer.out_channels();
  TORCH_CHECK(out.is_contiguous() && out.device() == x.device() && out.scalar_type() == x.scalar_type() &&
                  out.sizes() == at::IntArrayRef({batch, cout}),
              "fused3d: out must be a contiguous ", dtype_name(x.scalar_type()), " (", batch, ", ", cout,
              ") tensor on ", x.device(), ", got ", shape_string(out.sizes()), " ", dtype_name(out.scalar_type()),
              " on ", out.device());
  TORCH_CHECK(x.numel() == 0 || x.stride(0) < std::numeric_limits<int>::max(),
              "fused3d: one sample of shape ", shape_string(x.sizes().slice(1)),
              " has 2^31 elements or more; per-sample offsets are 32-bit");
  if (batch == 0) return;

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const bool tensorcore = tensorcore_k4_can_run(layer, x, precision);
  const PackedEntry packed = packed_weights(layer, precision, tensorcore);
  static_assert(sizeof(Moments<float>) == 3 * sizeof(float), "partials are viewed as floats");
  const at::TensorOptions float_options = x.options().dtype(at::kFloat);

  // The epilogue computes in double and writes float32; a float16 / bfloat16 result is rounded
  // from that once (a (B, Cout) copy).
  const at::Tensor gamma = as_float32(layer.gamma), beta = as_float32(layer.beta);
  at::Tensor out32 = out.scalar_type() == at::kFloat ? out : at::empty({batch, cout}, float_options);
  EpilogueParams p{};
  p.gamma = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  p.beta = beta.defined() ? beta.data_ptr<float>() : nullptr;
  p.out = out32.data_ptr<float>();
  p.batch = batch;
  p.channels = static_cast<int>(cout);
  p.groups = static_cast<int>(layer.norm_groups);
  p.eps = layer.eps;

  at::Tensor partials;
  bool epilogue_done = false;
  if (tensorcore) {
    p.tiles = tensorcore_k4_tiles(x);
    partials = at::empty({batch, p.tiles, cout, 3}, float_options);
    p.partials = reinterpret_cast<const Moments<float>*>(partials.data_ptr<float>());
    epilogue_done = tensorcore_k4_runs_epilogue(batch);
    launch_tensorcore_k4_moments(x, packed.tc, partials, p.tiles, epilogue_done ? &p : nullptr, stream);
  } else {
    const ConvShape s = conv_shape(x, layer);
    p.tiles = s.tiles;
    partials = at::empty({batch, p.tiles, cout, 3}, float_options);
    p.partials = reinterpret_cast<const Moments<float>*>(partials.data_ptr<float>());
    switch (x.scalar_type()) {
      case at::kFloat: launch_conv_hardswish_moments<float>(x, packed.general_w, packed.general_b, s, partials, stream); break;
      case at::kHalf: launch_conv_hardswish_moments<at::Half>(x, packed.general_w, packed.general_b, s, partials, stream); break;
      case at::kBFloat16: launch_conv_hardswish_moments<at::BFloat16>(x, packed.general_w, packed.general_b, s, partials, stream); break;
      default: TORCH_CHECK(false, "fused3d: no general kernel for dtype ", dtype_name(x.scalar_type()));
    }
  }

  if (!epilogue_done) launch_epilogue(p, stream);
  if (!out32.is_same(out)) out.copy_(out32);
}

at::Tensor fused_forward_cuda(const at::Tensor& input, const FusedLayer& layer, Precision precision) {
  using namespace general_kernel;  // this file's internals
  at::Tensor out = at::empty({input.dim() > 0 ? input.size(0) : 0, layer.out_channels()}, input.options());
  fused_forward_cuda_out(input, layer, precision, out);
  return out;
}

}  // namespace fused3d
