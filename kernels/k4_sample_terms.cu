// The per-sample pivots and biases of the tensor-core kernels (k4_sample_terms.h explains why):
// a thread per (sample, output channel), B x 16 of them, each reading its sample's Cin pivots.
#include "k4_sample_terms.h"

#include "k4_geometry.h"
#include "ptx.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

namespace fused3d::k4 {

constexpr int kSampleTermsThreads = 128;

// ------------------------------------------------------------------------------------------------
// CUDA kernels

__global__ void __launch_bounds__(kSampleTermsThreads)
    sample_terms_kernel(const float* __restrict__ x, long long sample_stride, long long channel_stride, int batch,
                        int cin, const float* __restrict__ weight_sums, const float* __restrict__ bias,
                        const float* __restrict__ half_unscale, float* __restrict__ pivots,
                        float* __restrict__ half_bias_out, float* __restrict__ bias_out) {
  ptx::launch_dependents();  // the moments kernel may be scheduled now; it waits for these terms
  const long long i = static_cast<long long>(blockIdx.x) * kSampleTermsThreads + threadIdx.x;
  if (i >= static_cast<long long>(batch) * kCout) return;
  const long long n = i / kCout;
  const int o = static_cast<int>(i % kCout);
  double sum = bias[o];
  for (int c = 0; c < cin; ++c) {
    const float v = x[n * sample_stride + c * channel_stride];
    const float pivot = isfinite(v) ? v : 0.f;
    if (o == 0) pivots[n * cin + c] = pivot;
    sum += static_cast<double>(pivot) * weight_sums[o * cin + c];
  }
  const float b = static_cast<float>(sum);
  bias_out[i] = b;
  half_bias_out[i] = b / half_unscale[o];  // exact: the unscale is a power of two
}

// ------------------------------------------------------------------------------------------------
// Kernel launchers

SampleTerms sample_terms(const at::Tensor& x, const TensorcoreWeights& w, cudaStream_t stream) {
  const int64_t batch = x.size(0), cin = x.size(1);
  SampleTerms t;
  t.storage = at::empty({batch * (cin + 2 * kCout)}, x.options());
  float* base = t.storage.data_ptr<float>();
  float* pivots = base;
  float* half_bias = base + batch * cin;
  float* bias = half_bias + batch * kCout;
  t.pivots = pivots;
  t.half_bias = half_bias;
  t.bias = bias;
  const long long threads = batch * kCout;
  sample_terms_kernel<<<static_cast<unsigned>((threads + kSampleTermsThreads - 1) / kSampleTermsThreads), kSampleTermsThreads, 0, stream>>>(
      x.data_ptr<float>(), x.stride(0), x.stride(1), static_cast<int>(batch), static_cast<int>(cin),
      w.weight_sums.data_ptr<float>(), w.bias.data_ptr<float>(), w.half_unscale.data_ptr<float>(), pivots, half_bias,
      bias);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return t;
}

}  // namespace fused3d::k4
