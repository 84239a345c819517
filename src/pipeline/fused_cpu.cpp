// The fused algorithm on the CPU: the convolution of a chunk of samples through libtorch's own CPU
// convolution (oneDNN), then the tail fused in one pass over that chunk while it is in cache:
// hardswish and the moments of each (sample, channel), and at the end the same GroupNorm-mean epilogue as the CUDA path
// (moments.h). Memory is O(chunk): the convolution output of the whole batch never exists, and the
// four ops' intermediate tensors (which libtorch's pipeline writes and reads back three times) are
// one chunk's conv output. Every conv setting (stride, zero padding, dilation, groups); float16
// and bfloat16 inputs are converted to float32 a chunk at a time and the result is rounded to
// their dtype at the end. Merges run in a fixed order, so the result does not depend on the thread
// count (tested).
#include "fused3d/pipeline.h"

#include "moments.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace fused3d {

namespace {

// A chunk's convolution output is about this size: small enough to stay in the caches for the
// tail's pass, large enough that oneDNN runs near its full rate per call.
constexpr int64_t kChunkBytes = int64_t{8} << 20;

// hardswish as moments.h's, with the gate's multiply and add apart: fmaf is a library call on a
// CPU build without FMA instructions, and this loop runs once per conv output. NaN stays NaN and
// -Inf gives NaN (-Inf * 0), as in PyTorch.
// The clamps are value selects, which compile to SIMD max and min (std::min and std::max return
// references, and the loop kept their branches).
inline float hardswish_cpu(float y) {
  float gate = y * (1.0f / 6.0f) + 0.5f;
  gate = gate > 0.0f ? gate : 0.0f;  // NaN -> 0, and y * 0 = NaN again
  gate = gate < 1.0f ? gate : 1.0f;
  return y * gate;
}

// The moments of hardswish(v[0 .. count)), one pass: sums of d = h - pivot and d^2 with the pivot
// a value of the run itself (so the sum of squares does not cancel when |mean| >> std, as in the
// CUDA kernels). Within blocks of kBlock values the sums run in kLanes interleaved float
// accumulators, which the compiler turns into SIMD lanes (one chain of dependent adds would take a
// latency per value), summed pairwise; the blocks' sums add up in double, so that float's rounding
// grows with the block, not with the run. An AVX2 clone runs where the CPU has it (two 8-float
// registers of lanes: 0.43 ns per value on one core where the baseline's four 4-float ones take
// 0.73), with the same operations in the same order: the same bits. Fixed order: deterministic.
__attribute__((target_clones("avx2", "default"))) Moments<float> hardswish_moments(const float* __restrict v,
                                                                                  int64_t count) {
  constexpr int kLanes = 16;
  constexpr int64_t kBlock = 1024;
  const float pivot = hardswish_cpu(v[0]);
  double sum = 0, squares = 0;
  for (int64_t first = 0; first < count; first += kBlock) {
    const int64_t end = std::min(count, first + kBlock);
    float s[kLanes] = {}, q[kLanes] = {};
    int64_t i = first;
    for (; i + kLanes <= end; i += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const float d = hardswish_cpu(v[i + j]) - pivot;
        s[j] += d;
        q[j] += d * d;
      }
    float s_rest = 0, q_rest = 0;  // apart from the lanes, which then stay in registers
    for (; i < end; ++i) {
      const float d = hardswish_cpu(v[i]) - pivot;
      s_rest += d;
      q_rest += d * d;
    }
    for (int width = kLanes / 2; width > 0; width /= 2)
      for (int j = 0; j < width; ++j) {
        s[j] += s[j + width];
        q[j] += q[j + width];
      }
    sum += s[0] + s_rest;
    squares += q[0] + q_rest;
  }
  const double n = static_cast<double>(count);
  return {static_cast<float>(count), static_cast<float>(pivot + sum / n),
          static_cast<float>(std::max(squares - sum * sum / n, 0.0))};
}

// The moments of every (sample, channel) of one chunk's conv output y (n, Cout, OD, OH, OW),
// contiguous, into moments[(first + n) * Cout + co]: one tile per sample.
void chunk_moments(const at::Tensor& y, int64_t first, Moments<float>* moments) {
  const int64_t samples = y.size(0), cout = y.size(1), volume = y.size(2) * y.size(3) * y.size(4);
  const float* data = y.data_ptr<float>();
  // A thread's share is at least ~256K values (~0.1 ms): waking the pool costs about as much.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(volume, 1));
  at::parallel_for(0, samples * cout, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item)  // (n, co) in y's row-major order
      moments[first * cout + item] = hardswish_moments(data + item * volume, volume);
  });
}

}  // namespace

void fused_forward_cpu_out(const at::Tensor& input, const FusedLayer& layer, at::Tensor& out) {
  const std::string why = forward_reason(input, layer, at::Device(at::kCPU));
  TORCH_CHECK(why.empty(), "fused3d: ", why);

  const at::Tensor x = input.contiguous();
  const at::Tensor w = as_float32(layer.weight), bias = as_float32(layer.bias);
  const at::Tensor gamma = as_float32(layer.gamma), beta = as_float32(layer.beta);
  const int64_t batch = x.size(0), cout = layer.out_channels();
  const auto out_size = conv_output_spatial(x, layer);

  const std::string out_why = out_mismatch_reason(out, x, layer);
  TORCH_CHECK(out_why.empty(), "fused3d: ", out_why);
  if (batch == 0) return;
  // One tile per sample: partials (B, 1, Cout) of Moments<float>.
  at::Tensor partials = at::empty({batch, 1, cout, 3}, at::kFloat);
  auto* moments = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  const int64_t sample_bytes = cout * out_size[0] * out_size[1] * out_size[2] * int64_t{sizeof(float)};
  const int64_t chunk = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(sample_bytes, 1), 1, batch);
  for (int64_t first = 0; first < batch; first += chunk) {
    // The layout libtorch's own pipeline hands its convolution: channels-last is faster for some
    // layers and 2.6x slower for others (2 cores), and picking per layer by timing would make a
    // result's bits depend on the timing.
    const at::Tensor xc = x.slice(0, first, std::min(batch, first + chunk)).to(at::kFloat);
    const at::Tensor y =
        at::conv3d(xc, w, bias, layer.stride, layer.padding, layer.dilation, layer.conv_groups).contiguous();
    chunk_moments(y, first, moments);
  }

  // The epilogue computes in double and writes float32; a float16 / bfloat16 result is rounded once.
  at::Tensor out32 = out.scalar_type() == at::kFloat ? out : at::empty({batch, cout}, at::kFloat);
  EpilogueParams p{};
  p.partials = moments;
  p.gamma = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  p.beta = beta.defined() ? beta.data_ptr<float>() : nullptr;
  p.out = out32.data_ptr<float>();
  p.batch = batch;
  p.tiles = 1;
  p.channels = static_cast<int>(cout);
  p.groups = static_cast<int>(layer.norm_groups);
  p.eps = layer.eps;
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int g = 0; g < p.groups; ++g) groupnorm_mean_epilogue(p, n, g, 0, 1, [](double v) { return v; });
  });
  if (!out32.is_same(out)) out.copy_(out32);
}

}  // namespace fused3d
