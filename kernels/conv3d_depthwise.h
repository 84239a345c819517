// The depthwise kernel (conv3d_depthwise.cu): conv3d -> bias -> hardswish -> per-(sample, channel)
// moments on CUDA cores for layers whose conv groups each read one input channel (Cin/G = 1:
// depthwise, with up to kMaxMultiplier output channels per group); its host interface and the
// tiling's index arithmetic (host and device: the unit tests run it on the host against libtorch's
// conv3d).
//
// A tile is a box of output positions of one sample and conv group: kDepth output planes (8, else 4
// where eight planes' input does not fit shared memory or the output has fewer, else 1) x rows x
// columns, one thread per (row, column) computing its kDepth positions. Its input footprint, the box of input elements the tile's
// outputs read (zero where it reaches into the padding), sits in shared memory:
//   footprint extent per axis  = (tile extent - 1) * stride + (kernel - 1) * dilation + 1
//   output (od0 + j, oh0 + r, ow0 + c), tap (kd, kh, kw) reads footprint element
//     (j * sd + kd * dd, r * sh + kh * dh, c * sw + kw * dw)
//   footprint element (fz, fy, fx) is x[n, g, od0 * sd - pd + fz, oh0 * sh - ph + fy, ow0 * sw - pw + fx]
#pragma once

#include "fused_layer.h"
#include "moments.h"

#include <cuda_runtime.h>

namespace fused3d::depthwise {

struct Traits {
  static constexpr int kThreads = 256;      // one (row, column) of a tile each
  static constexpr int kMaxMultiplier = 4;  // output channels per conv group, accumulators kDepth x 4
  static constexpr int kDeepTile = 8;       // output planes per tile (each tap's weights feed 8 FMAs)
  static constexpr int kHalfTile = 4;       // where 8 planes' footprint does not fit
  // The footprint and weights in shared memory stay within this, so that several blocks share an
  // SM (a kernel 3 layer's deep tile takes 13.6 KB).
  static constexpr int kMaxSharedBytes = 96 * 1024;
  static_assert(kThreads % 32 == 0, "whole warps");
  static_assert(kMaxMultiplier == 4, "a tap's weights are one float4");
  static_assert(kDeepTile > kHalfTile && kHalfTile > 1, "tile depths in decreasing order");
};

// A layer's tiling: the conv settings (ConvSpatial, fused_layer.h), the tile shape and the
// footprint's extent.
struct Tiling : ConvSpatial {
  int depth;           // output planes per tile: kDeepTile, kHalfTile or 1
  int rows, columns;   // output rows and columns per tile: rows * columns = kThreads
  int fd, fh, fw;      // the footprint's extent
  int tiles_d, tiles_h, tiles_w, tiles;  // tiles per sample and conv group
};

// The tile's first output position.
struct TileOrigin {
  int od, oh, ow;
};

FUSED3D_HOST_DEVICE TileOrigin tile_origin(const Tiling& t, int tile) {
  const int plane = t.tiles_h * t.tiles_w;
  const int td = tile / plane, th = (tile - td * plane) / t.tiles_w, tw = tile - td * plane - th * t.tiles_w;
  return {td * t.depth, th * t.rows, tw * t.columns};
}

// Offset in the footprint of the element that output (j, r, c) of a tile reads at tap (kd, kh, kw).
FUSED3D_HOST_DEVICE int footprint_offset(const Tiling& t, int j, int r, int c, int kd, int kh, int kw) {
  return ((j * t.sd + kd * t.dd) * t.fh + r * t.sh + kh * t.dh) * t.fw + c * t.sw + kw * t.dw;
}

// Shared memory per block: the footprint and the weights (taps x kMaxMultiplier floats).
FUSED3D_HOST_DEVICE size_t shared_bytes(const Tiling& t) {
  return (static_cast<size_t>(t.fd) * t.fh * t.fw + static_cast<size_t>(t.kd) * t.kh * t.kw * Traits::kMaxMultiplier) *
         sizeof(float);
}

// The tiling for x's spatial extent, with the tile depth given (kDeepTile, kHalfTile or 1).
Tiling tiling(const at::Tensor& x, const FusedLayer& layer, int depth);
// The tiling the kernel uses: the deepest tiles of kDeepTile and kHalfTile planes that the output
// has planes for and whose footprint fits, else single planes.
Tiling tiling(const at::Tensor& x, const FusedLayer& layer);

// Whether the layer is the kernel's (Cin/G = 1, at most kMaxMultiplier channels per group, float32,
// float16 or bfloat16) and a single plane's footprint fits kMaxSharedBytes.
bool can_run(const at::Tensor& x, const FusedLayer& layer);

// The weights per conv group as (G, taps, kMaxMultiplier) float32, channels past the group's zero;
// the bias as (G, kMaxMultiplier). Packed once per model.
struct DepthwiseWeights {
  at::Tensor weight;
  at::Tensor bias;
};
DepthwiseWeights pack_weights(const FusedLayer& layer);

// Partial-moment tiles per sample: one per tile.
int tiles(const at::Tensor& x, const FusedLayer& layer);
// partials: (B, tiles, Cout) Moments<float> viewed as (B, tiles, Cout, 3) floats; x contiguous.
void launch(const at::Tensor& x, const FusedLayer& layer, const DepthwiseWeights& weights, at::Tensor& partials,
            cudaStream_t stream);

}  // namespace fused3d::depthwise
