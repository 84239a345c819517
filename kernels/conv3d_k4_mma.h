// The mma.sync kernel (conv3d_k4_mma.cu): kernel 4x4x4, 16 output channels, any Cin, on tensor
// cores through mma.sync; its host interface, and its work-item walk (host and device: the unit
// tests run it on the host).
#pragma once

#include "fused_layer.h"
#include "moments.h"
#include "k4_sample_terms.h"
#include "plan.h"
#include "tensorcore_weights.h"

#include <cuda_runtime.h>

namespace fused3d::k4_mma {

// Whether the kernel takes this layer and input (else the general kernel runs).
bool can_run(const FusedLayer& layer, const at::Tensor& x, Precision precision);
// Partial-moment tiles per sample: work items per sample, OD x bands of row tiles.
int tiles(const at::Tensor& x);
// Dynamic shared memory of a block for x's shape.
size_t shared_bytes(const at::Tensor& x);
// Whether the kernel also runs the GroupNorm-mean epilogue (its last block) at this batch.
bool runs_epilogue(int64_t batch);
// partials: (B, tiles, 16) Moments<float> viewed as (B, tiles, 16, 3) floats. epilogue: the
// epilogue's parameters when plan.epilogue_in_kernel, else nullptr. terms: of x, on the stream.
void launch(const at::Tensor& x, const k4::TensorcoreWeights& weights, const k4::SampleTerms& terms, const Plan& plan,
            at::Tensor& partials, const EpilogueParams* epilogue, cudaStream_t stream);

// A work item is one (sample n, output depth od, band of row tiles), numbered n-major. The
// persistent grid walks items `stride` apart; the stride is kept in the same mixed radix, so the next
// item is a few adds and compares (a division per item cost ~130 instructions). P has the item
// grid: tiles = items per sample = ods * bands, bands, ods.
struct ItemCoords {
  int n, od, band;
};

template <typename P>
FUSED3D_HOST_DEVICE ItemCoords item_coords(const P& p, int item) {
  const int n = item / p.tiles;
  const int tile_index = item - n * p.tiles;
  const int od = tile_index / p.bands;
  return {n, od, tile_index - od * p.bands};
}

// c + stride, both in (n, od < ods, band < bands).
template <typename P>
FUSED3D_HOST_DEVICE ItemCoords next_item(const P& p, ItemCoords c, const ItemCoords& stride) {
  c.band += stride.band;
  if (c.band >= p.bands) {
    c.band -= p.bands;
    ++c.od;
  }
  c.od += stride.od;
  if (c.od >= p.ods) {
    c.od -= p.ods;
    ++c.n;
  }
  c.n += stride.n;
  return c;
}

}  // namespace fused3d::k4_mma
