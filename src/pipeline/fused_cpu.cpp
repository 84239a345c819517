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

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fused3d {

namespace {

// A chunk's convolution output is about this size: small enough to stay in the caches for the
// tail's pass, large enough that oneDNN runs near its full rate per call.
constexpr int64_t kChunkBytes = int64_t{8} << 20;

// hardswish as moments.h's, with the gate's multiply and add apart: fmaf is a library call on a
// CPU build without FMA instructions, and this loop runs once per conv output. NaN stays NaN and
// -Inf gives NaN (-Inf * 0), as in PyTorch.
// The clamps are value selects (std::min and std::max return references, and the loop kept their
// branches); the AVX2 form below does them as max and min.
inline float hardswish_cpu(float y) {
  float gate = y * (1.0f / 6.0f) + 0.5f;
  gate = gate > 0.0f ? gate : 0.0f;  // NaN -> 0, and y * 0 = NaN again
  gate = gate < 1.0f ? gate : 1.0f;
  return y * gate;
}

// The moments of hardswish(v[0 .. count)), one pass: sums of d = h - pivot and d^2 with the pivot
// a value of the run itself (so the sum of squares does not cancel when |mean| >> std, as in the
// CUDA kernels). Within blocks of kBlock values the sums run in kLanes interleaved float
// accumulators (one chain of dependent adds would take a latency per value), summed pairwise; the
// blocks' sums add up in double, so that float's rounding grows with the block, not with the run.
// Fixed order: deterministic.
constexpr int kLanes = 16;
constexpr int64_t kBlock = 1024;

// A block's lane sums, and the block's values past the last whole group of kLanes, into the sums.
inline void add_block(const float (&s)[kLanes], const float (&q)[kLanes], const float* rest, int64_t rest_count,
                      float pivot, double& sum, double& squares) {
  float s_rest = 0, q_rest = 0;
  for (int64_t i = 0; i < rest_count; ++i) {
    const float d = hardswish_cpu(rest[i]) - pivot;
    s_rest += d;
    q_rest += d * d;
  }
  float sl[kLanes], ql[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    sl[j] = s[j];
    ql[j] = q[j];
  }
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) {
      sl[j] += sl[j + width];
      ql[j] += ql[j + width];
    }
  sum += sl[0] + s_rest;
  squares += ql[0] + q_rest;
}

inline Moments<float> moments_from_sums(int64_t count, float pivot, double sum, double squares) {
  const double n = static_cast<double>(count);
  return {static_cast<float>(count), static_cast<float>(pivot + sum / n),
          static_cast<float>(std::max(squares - sum * sum / n, 0.0))};
}

}  // namespace

// Portable form: the compiler turns the lanes into SIMD registers of the baseline ISA.
Moments<float> hardswish_moments_portable(const float* __restrict v, int64_t count) {
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
    add_block(s, q, v + i, end - i, pivot, sum, squares);
  }
  return moments_from_sums(count, pivot, sum, squares);
}

#if defined(__x86_64__)
// AVX2 form, the same operations in the same order (so the same bits): two 8-float registers per
// sum, hardswish's clamps as max and min. _mm256_max_ps(gate, 0) gives 0 where gate is NaN or
// -0, as `gate > 0 ? gate : 0` does, and the min then sees no NaN: the values of hardswish_cpu.
// The compiler made those selects compares and three blends per vector: with this form the tails
// of the test suite's layers at B = 64 took 1.2-2.4x less time (tools/bench_cpu.cpp's tail columns,
// RECORD.md "the CPU path's tail").
__attribute__((target("avx2"))) static inline __m256 hardswish_deviation_avx2(const float* at, __m256 pivot) {
  const __m256 y = _mm256_loadu_ps(at);
  __m256 gate = _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.0f / 6.0f)), _mm256_set1_ps(0.5f));
  gate = _mm256_min_ps(_mm256_max_ps(gate, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
  return _mm256_sub_ps(_mm256_mul_ps(y, gate), pivot);
}

__attribute__((target("avx2"))) Moments<float> hardswish_moments_avx2(const float* __restrict v, int64_t count) {
  const float pivot = hardswish_cpu(v[0]);
  const __m256 zero = _mm256_setzero_ps(), p = _mm256_set1_ps(pivot);
  double sum = 0, squares = 0;
  for (int64_t first = 0; first < count; first += kBlock) {
    const int64_t end = std::min(count, first + kBlock);
    __m256 s0 = zero, s1 = zero, q0 = zero, q1 = zero;
    int64_t i = first;
    for (; i + kLanes <= end; i += kLanes) {
      const __m256 d0 = hardswish_deviation_avx2(v + i, p), d1 = hardswish_deviation_avx2(v + i + 8, p);
      s0 = _mm256_add_ps(s0, d0);
      s1 = _mm256_add_ps(s1, d1);
      q0 = _mm256_add_ps(q0, _mm256_mul_ps(d0, d0));
      q1 = _mm256_add_ps(q1, _mm256_mul_ps(d1, d1));
    }
    float s[kLanes], q[kLanes];
    _mm256_storeu_ps(s, s0);
    _mm256_storeu_ps(s + 8, s1);
    _mm256_storeu_ps(q, q0);
    _mm256_storeu_ps(q + 8, q1);
    add_block(s, q, v + i, end - i, pivot, sum, squares);
  }
  return moments_from_sums(count, pivot, sum, squares);
}
#else
Moments<float> hardswish_moments_avx2(const float*, int64_t) {
  TORCH_CHECK(false, "fused3d: the AVX2 tail runs on x86-64 CPUs only");
  return {};
}
#endif

bool cpu_has_avx2() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

namespace {

Moments<float> hardswish_moments(const float* v, int64_t count) {
  return cpu_has_avx2() ? hardswish_moments_avx2(v, count) : hardswish_moments_portable(v, count);
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

at::Tensor fused_tail_moments_cpu(const at::Tensor& y) {
  TORCH_CHECK(y.dim() == 5 && y.scalar_type() == at::kFloat && y.is_contiguous() && y.device().is_cpu(),
              "fused3d: the tail takes a contiguous float32 (n, C, D, H, W) tensor on the CPU, got ",
              shape_string(y.sizes()), " ", dtype_name(y.scalar_type()));
  at::Tensor moments = at::empty({y.size(0), y.size(1), 3}, at::kFloat);
  chunk_moments(y, 0, reinterpret_cast<Moments<float>*>(moments.data_ptr<float>()));
  return moments;
}

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
