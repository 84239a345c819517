// Running moments (count, mean, M2) and the GroupNorm-then-mean epilogue, shared by the CUDA
// kernels and the CPU path so that both merge statistics the same way.
//
// Why (count, mean, M2) and not (sum, sum of squares): var = E[h^2] - E[h]^2 cancels when
// |mean| >> std (a conv over inputs in [5, 6) gives exactly that); Chan's merge of centred moments
// does not. Every merge happens in a fixed order, so results are bitwise reproducible.
//
// The epilogue uses the identity (DESIGN-NOTES.md) for sample n, channel c in group g:
//   mean_s(groupnorm(h))[n, c] = gamma[c] * (M[n,c] - mu[n,g]) * rsqrt(var[n,g] + eps) + beta[c]
// where M is the channel's spatial mean and mu, var the group's biased mean and variance.
#pragma once

#include <cmath>

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
FUSED3D_HOST_DEVICE float hardswish_gate(float y) { return fminf(fmaxf(fmaf(y, 1.0f / 6.0f, 0.5f), 0.0f), 1.0f); }
FUSED3D_HOST_DEVICE float hardswish(float y) { return y * hardswish_gate(y); }

// Per-(sample, channel) partial moments live in a (B, tiles, C) array of Moments<float>, one entry
// per spatial tile of one sample. This turns them into out[n, c]. Merges run in double: B*C*(C/G)*tiles
// merges are nothing next to the convolution, and double keeps the epilogue out of the error budget.
FUSED3D_HOST_DEVICE double channel_mean_from_tiles(const Moments<float>* sample_partials, int tiles,
                                                   int channels, int c, Moments<double>* merged) {
  Moments<double> acc{0.0, 0.0, 0.0};
  for (int t = 0; t < tiles; ++t) {
    const Moments<float>& p = sample_partials[t * channels + c];
    acc = merge_moments(acc, Moments<double>{p.count, p.mean, p.m2});
  }
  *merged = acc;
  return acc.mean;
}

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

// out[n, c] for one (n, c). The group's moments are merged channel by channel in ascending order.
FUSED3D_HOST_DEVICE void groupnorm_mean_epilogue(const EpilogueParams& p, long long n, int c) {
  const Moments<float>* sample = p.partials + n * p.tiles * p.channels;
  const int per_group = p.channels / p.groups;
  const int first = (c / per_group) * per_group;
  Moments<double> group{0.0, 0.0, 0.0};
  double channel_mean = 0.0;
  for (int k = first; k < first + per_group; ++k) {
    Moments<double> ch;
    const double mean = channel_mean_from_tiles(sample, p.tiles, p.channels, k, &ch);
    if (k == c) channel_mean = mean;
    group = merge_moments(group, ch);
  }
  const double var = group.m2 / group.count;
  const double inv_std = 1.0 / sqrt(var + p.eps);
  const double scale = p.gamma ? double(p.gamma[c]) : 1.0;
  const double shift = p.beta ? double(p.beta[c]) : 0.0;
  p.out[n * p.channels + c] = float(scale * (channel_mean - group.mean) * inv_std + shift);
}

}  // namespace fused3d
