// The wgmma planes kernel (conv3d_k4_planes.cu): the standard layer's shape (kernel 4x4x4, 16
// output channels, 3 input channels, 32 x 32 planes) on tensor cores through wgmma (sm_90a); its
// host interface, and how it shares a batch's output planes among blocks (host and device: the unit
// tests run it on the host).
#pragma once

#include "fused_layer.h"
#include "moments.h"
#include "k4_sample_terms.h"
#include "plan.h"
#include "tensorcore_weights.h"

#include <cuda_runtime.h>

#include <algorithm>

namespace fused3d::k4_planes {

#if !defined(__CUDA_ARCH__)
using std::max;
using std::min;
#endif

// Whether the kernel takes x, for a layer and precision the mma.sync kernel takes (k4_mma::can_run),
// on this device with this build's code (it needs sm_90a: device_code.h).
bool can_run(const at::Tensor& x);
// Partial-moment tiles per sample: a tile per 16-column strip of each output plane, OD x 2.
int tiles(const at::Tensor& x);
// Dynamic shared memory of a block: the rings of input and pair planes and the weights' B tiles.
size_t shared_bytes(Precision precision);
// partials: (B, tiles, 16) Moments<float> viewed as (B, tiles, 16, 3) floats; terms: of x, on the stream.
void launch(const at::Tensor& x, const k4::TensorcoreWeights& weights, const k4::SampleTerms& terms, const Plan& plan,
            at::Tensor& partials, cudaStream_t stream);

// A block's output planes: [start, start + count) of the batch's B x OD, numbered sample-major;
// every block gets the same share to one plane. A block's streams run over segments, one per
// sample it touches: segment `seg` is sample first_sample + seg, output planes [b, e) of it; its
// pair planes are b .. e + 1 and its input planes b .. e + 2. Numbered along the block's streams,
// output plane od of sample n is n * OD + od - start, its pp = 0 pair plane that + 2 * seg, and
// input plane i of sample n that + 3 * seg. P has batch and ods (output planes per sample).
struct PlaneRange {
  int start, count, first_sample;
};
template <typename P>
FUSED3D_HOST_DEVICE PlaneRange block_planes(const P& p, unsigned block, unsigned blocks) {
  const long long total = static_cast<long long>(p.batch) * p.ods;
  const int start = static_cast<int>(total * block / blocks);
  const int end = static_cast<int>(total * (block + 1) / blocks);
  return {start, end - start, start / p.ods};
}

// Segment seg of the block's range: its sample and output planes [b, e).
struct Segment {
  int sample, b, e;
};
template <typename P>
FUSED3D_HOST_DEVICE Segment segment_of(const P& p, const PlaneRange& r, int seg) {
  const int sample = r.first_sample + seg, first = sample * p.ods;
  return {sample, max(r.start, first) - first, min(r.start + r.count, first + p.ods) - first};
}

// Segments of a block's range: the samples it touches.
template <typename P>
FUSED3D_HOST_DEVICE int segment_count(const P& p, const PlaneRange& r) {
  return (r.start + r.count - 1) / p.ods - r.first_sample + 1;
}

}  // namespace fused3d::k4_planes
