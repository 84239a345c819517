// Running moments (count, mean, M2) and the GroupNorm-then-mean epilogue, shared by the CUDA
// kernels and the CPU path so that both merge statistics the same way.
//
// Why (count, mean, M2) and not (sum, sum of squares): var = E[h^2] - E[h]^2 cancels when
// |mean| >> std (a conv over inputs in [5, 6) gives exactly that); Chan's merge of centred moments
// does not. Every merge happens in a fixed order, so results are bitwise reproducible.
//
// The epilogue uses the identity (OPTIMIZATION.md 2) for sample n, channel c in group g:
//   mean_s(groupnorm(h))[n, c] = gamma[c] * (M[n,c] - mu[n,g]) * rsqrt(var[n,g] + eps) + beta[c]
// where M is the channel's spatial mean and mu, var the group's biased mean and variance.
#pragma once

#include <cmath>
#include <type_traits>

#if defined(__CUDACC__)
#define FUSED3D_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSED3D_HOST_DEVICE inline
#endif

namespace fused3d {

template <typename T>
struct Moments {
  T count;
  T mean;
  T m2;  // sum of squared deviations from mean
};

// Chan et al.: merge b into a. An empty side leaves the other unchanged.
template <typename T>
FUSED3D_HOST_DEVICE Moments<T> merge_moments(const Moments<T>& a, const Moments<T>& b) {
  if (b.count == T(0)) return a;
  if (a.count == T(0)) return b;
  const T count = a.count + b.count;
  const T delta = b.mean - a.mean;
  const T b_share = b.count / count;
  return {count, a.mean + delta * b_share, a.m2 + b.m2 + delta * delta * a.count * b_share};
}

// N entries merged at once by the two-pass identity of the epilogue below (the count-weighted mean,
// then M2 from each entry's deviation): one division, where a chain of Chan merges needs N - 1
// dependent ones. Entries with count 0 add nothing; all empty gives an empty result.
template <typename T, int N>
FUSED3D_HOST_DEVICE Moments<T> merge_all(const Moments<T> (&m)[N]) {
  T count = 0, weighted = 0;
  for (int i = 0; i < N; ++i) {
    count += m[i].count;
    weighted += m[i].count * m[i].mean;
  }
  if (count == T(0)) return {};
  const T mean = weighted / count;
  T m2 = 0;
  for (int i = 0; i < N; ++i) {
    const T d = m[i].mean - mean;
    m2 += m[i].m2 + m[i].count * d * d;
  }
  return {count, mean, m2};
}

// Moments of a handful of values held by one thread: two-pass, exact up to rounding.
template <typename T, int N>
FUSED3D_HOST_DEVICE Moments<T> moments_of(const T (&v)[N], int valid) {
  T sum = 0;
  for (int i = 0; i < N; ++i) sum += (i < valid) ? v[i] : T(0);
  const T mean = valid > 0 ? sum / T(valid) : T(0);
  T m2 = 0;
  for (int i = 0; i < N; ++i) {
    const T d = v[i] - mean;
    m2 += (i < valid) ? d * d : T(0);
  }
  return {T(valid), mean, m2};
}

// The same for the values whose `use` flag is set (any subset, in the same order).
template <typename T, int N>
FUSED3D_HOST_DEVICE Moments<T> moments_of_selected(const T (&v)[N], const bool (&use)[N]) {
  T sum = 0, count = 0;
  for (int i = 0; i < N; ++i) {
    sum += use[i] ? v[i] : T(0);
    count += use[i] ? T(1) : T(0);
  }
  const T mean = count > T(0) ? sum / count : T(0);
  T m2 = 0;
  for (int i = 0; i < N; ++i) {
    const T d = v[i] - mean;
    m2 += use[i] ? d * d : T(0);
  }
  return {count, mean, m2};
}

// Moments of a run of values in memory (the CPU path: one output row), two-pass.
template <typename T>
FUSED3D_HOST_DEVICE Moments<T> moments_of_span(const T* v, int count) {
  T sum = 0;
  for (int i = 0; i < count; ++i) sum += v[i];
  const T mean = count > 0 ? sum / T(count) : T(0);
  T m2 = 0;
  for (int i = 0; i < count; ++i) m2 += (v[i] - mean) * (v[i] - mean);
  return {T(count), mean, m2};
}

// hardswish(y) = y * clamp(y + 3, 0, 6) / 6, written as y * clamp(y / 6 + 1/2, 0, 1): no division
// (an IEEE float division is a ~10-instruction sequence on the GPU and ran per output element),
// and the clamp becomes one saturating FMA. It can differ from PyTorch's form by an ulp. NaN stays
// NaN (fmaxf picks 0, then NaN * 0).
// The tensor-core kernels hold a = y / u (u a power of two per channel) and pass u / 6 (exact).
FUSED3D_HOST_DEVICE float hardswish_gate_scaled(float a, float u_sixth) {
  return fminf(fmaxf(fmaf(a, u_sixth, 0.5f), 0.0f), 1.0f);
}
FUSED3D_HOST_DEVICE float hardswish_gate(float y) { return hardswish_gate_scaled(y, 1.0f / 6.0f); }
FUSED3D_HOST_DEVICE float hardswish(float y) { return y * hardswish_gate(y); }

// Per-(sample, channel) partial moments live in a (B, tiles, C) array of Moments<float>, one entry
// per spatial tile of one sample. The epilogue turns them into out[n, c], in double, by two passes
// over a group's (channel, tile) entries rather than a chain of Chan merges: the exact identity
//   M2 = sum_t (m2_t + n_t (mean_t - mean)^2),   mean = sum_t n_t mean_t / sum_t n_t
// needs no division per entry, its terms are non-negative (nothing cancels), and the entries can be
// split among the lanes of a warp, a warp per (sample, group): lanes over tiles (the lanes form
// below, any group) or over the group's channels and tiles (the warp form, groups of 1, 2, 4, ...,
// 32 channels), instead of a chain of dependent loads and double divisions per output (which took
// ~7 us of a 27 us B=1 forward, H100). The CPU runs the lanes form as one lane. Fixed orders:
// deterministic.
struct EpilogueParams {
  const Moments<float>* partials;  // (B, tiles, C)
  const float* gamma;              // (C) or nullptr: no affine
  const float* beta;               // (C) or nullptr: no affine
  float* out;                      // (B, C)
  long long batch;
  int tiles;
  int channels;
  int groups;
  double eps;
};

// out[n, c] for the channels c of group `group`, computed by `lanes` cooperating lanes (this is
// `lane`): each sums the entries of its tiles; all_sum(v) returns the sum of v over the lanes, the
// same value to every lane (on the CPU, one lane: v itself). Lane 0 writes the results. The group's
// mean and M2 are computed once for its channels (two passes over the group's entries), then each
// channel's mean from its own entries: a group of 4 channels reads 12 entries per tile where an
// output at a time read 32.
template <typename AllSum>
FUSED3D_HOST_DEVICE void groupnorm_mean_epilogue(const EpilogueParams& p, long long n, int group, int lane, int lanes,
                                                 AllSum all_sum) {
  const Moments<float>* sample = p.partials + n * p.tiles * p.channels;
  const int per_group = p.channels / p.groups;
  const int first = group * per_group;
  double count = 0.0, weighted = 0.0;  // sums of n_t, n_t mean_t
  for (int k = first; k < first + per_group; ++k)
    for (int t = lane; t < p.tiles; t += lanes) {
      const Moments<float>& q = sample[t * p.channels + k];
      count += q.count;
      weighted += double(q.count) * q.mean;
    }
  count = all_sum(count);
  const double group_mean = all_sum(weighted) / count;
  double m2 = 0.0;
  for (int k = first; k < first + per_group; ++k)
    for (int t = lane; t < p.tiles; t += lanes) {
      const Moments<float>& q = sample[t * p.channels + k];
      const double d = double(q.mean) - group_mean;
      m2 += q.m2 + q.count * d * d;
    }
  const double inv_std = 1.0 / sqrt(all_sum(m2) / count + p.eps);
  for (int c = first; c < first + per_group; ++c) {
    double channel_count = 0.0, channel_weighted = 0.0;
    for (int t = lane; t < p.tiles; t += lanes) {
      const Moments<float>& q = sample[t * p.channels + c];
      channel_count += q.count;
      channel_weighted += double(q.count) * q.mean;
    }
    const double channel_mean = all_sum(channel_weighted) / all_sum(channel_count);
    if (lane != 0) continue;
    const double scale = p.gamma ? double(p.gamma[c]) : 1.0;
    const double shift = p.beta ? double(p.beta[c]) : 0.0;
    p.out[n * p.channels + c] = float(scale * (channel_mean - group_mean) * inv_std + shift);
  }
}

// Which form computes a group of `per_group` channels: f(std::integral_constant<int, k>{}) with
// k = per_group for the warp form (1, 2, 4, ... up to kMax), k = 0 for the lanes form (any other
// group; with kAnyGroup false, for a caller whose groups are powers of two up to kMax, none). The
// one choice of form, for the epilogue kernel's instance (host) and the B = 1 kernel's own
// epilogue (device).
template <int kMax, bool kAnyGroup = true, int kTry = 1, typename F>
FUSED3D_HOST_DEVICE void with_epilogue_form(int per_group, F&& f) {
  if constexpr (kTry > kMax) {
    if constexpr (kAnyGroup) f(std::integral_constant<int, 0>{});
  } else if (per_group == kTry) {
    f(std::integral_constant<int, kTry>{});
  } else {
    with_epilogue_form<kMax, kAnyGroup, 2 * kTry>(per_group, f);
  }
}

#if defined(__CUDACC__)
// The lanes form: the outputs of group g of sample n, i = n * groups + g, by one warp whose lanes
// take the group's tiles in turn.
__device__ __forceinline__ void groupnorm_mean_epilogue_lanes(const EpilogueParams& p, long long i) {
  const auto all_sum = [](double v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return __shfl_sync(0xffffffffu, v, 0);  // the first lane's sum (its order) to every lane
  };
  groupnorm_mean_epilogue(p, i / p.groups, static_cast<int>(i % p.groups), threadIdx.x % 32, 32, all_sum);
}

// The warp form: the outputs of group g of sample n, i = n * groups + g, by one warp, where the
// group's channel count kPerGroup is a power of two up to 32: lane l takes channel l % kPerGroup of
// the group in tiles l / kPerGroup, + 32 / kPerGroup, ..., so every lane's loads are independent
// and the standard layer's 26 tiles arrive in one round (4 per lane). The lanes form reads them a
// channel at a time, a round each, and sums each channel's again: at the standard batch its kernel
// took 14.0 us under ncu, this one 7.5 (H100). The epilogue is latency-bound: a warp per sample
// with 13 tiles per lane ran 728 instructions per warp at ~19 cycles each, mostly waiting on its
// loads. The tile slices of a channel meet by xor-shuffles over the high lane bits, the channels of
// the group over the low ones; each butterfly leaves the same sum in every lane it joins
// (a + b = b + a). The same identity as the lanes form, in double, in another fixed order.
template <int kPerGroup>
__device__ __forceinline__ void groupnorm_mean_epilogue_warp(const EpilogueParams& p, long long i) {
  static_assert(kPerGroup >= 1 && kPerGroup <= 32 && (kPerGroup & (kPerGroup - 1)) == 0, "a power of two up to 32");
  constexpr int kSlices = 32 / kPerGroup;
  const int lane = threadIdx.x % 32, slice = lane / kPerGroup;
  const long long n = i / p.groups;
  const int c = static_cast<int>(i % p.groups) * kPerGroup + lane % kPerGroup;
  const Moments<float>* entries = p.partials + n * p.tiles * p.channels + c;
  const auto channel_sum = [](double v) {
#pragma unroll
    for (int offset = kPerGroup; offset < 32; offset *= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
  };
  const auto group_sum = [](double v) {
#pragma unroll
    for (int offset = 1; offset < kPerGroup; offset *= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
  };
  double count = 0.0, weighted = 0.0;  // sums of n_t, n_t mean_t
#pragma unroll 4
  for (int t = slice; t < p.tiles; t += kSlices) {
    const Moments<float>& q = entries[static_cast<long long>(t) * p.channels];
    count += q.count;
    weighted += double(q.count) * q.mean;
  }
  count = channel_sum(count);
  weighted = channel_sum(weighted);
  const double group_count = group_sum(count);
  const double group_mean = group_sum(weighted) / group_count;
  double m2 = 0.0;
#pragma unroll 4
  for (int t = slice; t < p.tiles; t += kSlices) {
    const Moments<float>& q = entries[static_cast<long long>(t) * p.channels];
    const double d = double(q.mean) - group_mean;
    m2 += q.m2 + q.count * d * d;
  }
  const double inv_std = 1.0 / sqrt(group_sum(channel_sum(m2)) / group_count + p.eps);
  if (slice != 0) return;
  const double scale = p.gamma ? double(p.gamma[c]) : 1.0;
  const double shift = p.beta ? double(p.beta[c]) : 0.0;
  p.out[n * p.channels + c] = float(scale * (weighted / count - group_mean) * inv_std + shift);
}

// Group i = n * groups + g in form kForm (with_epilogue_form): 0 the lanes form, else the warp
// form for groups of kForm channels.
template <int kForm>
__device__ __forceinline__ void groupnorm_mean_epilogue_group(const EpilogueParams& p, long long i) {
  if constexpr (kForm == 0)
    groupnorm_mean_epilogue_lanes(p, i);
  else
    groupnorm_mean_epilogue_warp<kForm>(p, i);
}
#endif

}  // namespace fused3d
