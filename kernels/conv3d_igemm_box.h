// The box implicit-GEMM kernel (conv3d_igemm_box.cu): the implicit-GEMM kernel's GEMM and
// epilogue (conv3d_igemm.h) for float32 inputs, with A read from an input footprint in shared
// memory instead of gathered from global memory per tap; its host interface and index arithmetic
// (host and device: the unit tests run it on the host against libtorch's conv3d).
//
// A step's 128 output positions are a box of one output plane: rows x columns (4 x 32, 8 x 16 or
// 16 x 8). Its input footprint per channel, zero where it reaches into the padding or past the
// input, is
//   footprint extent per axis >= (box extent - 1) * stride + (kernel - 1) * dilation + 1 (depth: 1 plane)
//   footprint element (fz, fy, fx) is x[n, c, od * sd - pd + fz, oh0 * sh - ph + fy, ow0 * sw - pw - shift + fx]
// (rows and planes padded for the tensor copy that fills it and for the banks, and started `shift`
// columns early; tiling and footprint_start say how)
// and the channels come in chunks of `chunk` (4, 8 or 16), one chunk's footprints in shared memory
// at a time, `pitch` floats apart. K runs over chunks, then taps, then the chunk's channels:
//   k = (chunk_index * taps_padded + tap) * chunk + ci      (taps_padded: a chunk's K is whole slices)
//   A[p, k] = footprint[row_offset(p) + column_offset(k)] of chunk chunk_index
//   row_offset(p)    = r * sh * fw + c * sw + shift         p = r * columns + c, the box position
//   column_offset(k) = ci * pitch + (kd * dd * fh + kh * dh) * fw + kw * dw   (padded taps: tap 0's)
// so a position's row of A is a fixed offset into the footprint plus a per-column offset that is
// the same for every position: each A element is one shared-memory load, with no bounds test.
#pragma once

#include "conv3d_igemm.h"
#include "fused_layer.h"
#include "moments.h"

#include <cuda_runtime.h>

namespace fused3d::igemm_box {

struct Traits {
  static constexpr int kThreads = igemm::Traits::kThreads;
  static constexpr int kBoxPositions = igemm::Traits::kBlockM;  // one step: a thread's row of A each
  static constexpr int kBlockK = igemm::Traits::kBlockK;
  static constexpr int kMinChunk = 4, kMaxChunk = 16;  // channels per footprint: a k8 step's 4 lane columns
  // Two chunks' footprints (one filled while the other is read) and the column table stay within
  // this, so that two blocks share an SM besides W's stages.
  static constexpr int kMaxSharedBytes = 100 * 1024;
  static constexpr int kMaxBoxExtent = 256;  // a tensor copy's box, per axis
  // A chunk's k8 steps, whose column offsets travel in the kernel's parameters (8 bytes each, 3 KB
  // of the 4 KB): kernel 7 x 7 x 7 with 8 channels per chunk has 344.
  static constexpr int kMaxColumnSteps = 384;
  // W arrives in stages of several slices where the block has few channels, so that a barrier
  // (and an mbarrier wait) is paid per stage, not per slice: with 16 channels a slice is 8 MMAs
  // per warp. Two stages of all parts stay within kMaxWBytes, so that two blocks with
  // kMaxSharedBytes of footprints share an SM (wgmma's ring holds three or four: w_buffers).
  static constexpr int kMaxWBytes = 12 * 1024;
  static constexpr int kMaxSlicesPerStage = 4;
  static constexpr int slices_per_stage(int n_tiles, int parts) {
    int slices = kMaxSlicesPerStage;
    while (slices > 1 && igemm::Traits::kStages * parts * slices * kBlockK * 8 * n_tiles * 4 > kMaxWBytes) slices /= 2;
    return slices;
  }
  // W's buffers and how many stages ahead of the one multiplied they are loaded. mma.sync's reads
  // of a stage are done when its warps reach the next stage's barrier: two buffers, one ahead.
  // wgmma's last two steps of a stage are still in flight there (each warp waits for a step's
  // wgmmas two steps later, and a stage has at least two), so the buffer loaded at stage s is the
  // one stage s - 2 read: a ring of kWBuffers loaded kWBuffers - 2 ahead. The tf32 mode takes four
  // (two stages ahead: a stage of 4 to 8 wgmmas is shorter than an L2 read); the accurate mode,
  // whose stages hold three times the wgmmas, three (8 KB buffers with 64 channels).
  static constexpr int w_buffers(bool wgmma, int parts) { return !wgmma ? 2 : parts == 1 ? 4 : 3; }
  static constexpr int w_lookahead(bool wgmma, int parts) { return wgmma ? w_buffers(wgmma, parts) - 2 : 1; }
  // Blocks of 32 and 64 channels run their steps as wgmma where the code has it (sm_90a), the
  // rest as mma.sync: with 64 channels wgmma took Cin 32 -> 64 from 0.427 / 0.770 ms to 0.370 /
  // 0.532 (tf32 / accurate), with 32 Cin 8 -> 32 from 0.648 / 1.012 to 0.612 / 0.885; with 16 it
  // won and lost by up to 10% by layer and mode (kernel 7 tf32 0.700 -> 0.771, kernel 5 accurate
  // 1.935 -> 1.796; H200, run 110).
  static constexpr bool uses_wgmma(int n_tiles) { return n_tiles >= 4; }
  static_assert(kThreads == 128, "one warpgroup: a step's two m64 tiles");
  static_assert(kBoxPositions == 128, "boxes of 4 x 32, 8 x 16 or 16 x 8 positions");
  static_assert(kMinChunk == 4 && kBlockK % kMaxChunk == 0, "a k8 step's columns t and t + 4 share a tap and differ in ci");
};
static_assert(Traits::w_buffers(true, 1) >= 3 && Traits::w_buffers(true, 2) >= 3 && Traits::w_buffers(false, 1) == 2,
              "wgmma needs a W stage ahead of the two its reads may still hold");
static_assert(Traits::slices_per_stage(1, 2) == 4 && Traits::slices_per_stage(2, 1) == 4 &&
                  Traits::slices_per_stage(2, 2) == 2 && Traits::slices_per_stage(4, 1) == 2 &&
                  Traits::slices_per_stage(8, 1) == 1,
              "16 channels: 4 slices per stage in the tf32 mode, 2 in the accurate mode; 64 channels: 1");

// W's layout within a slice of kBlockK rows (k) and n columns: two k8 steps of wgmma's K-major
// B tile (wgmma::m64k8_tf32), float ((2 * (c / 8) + k % 8 / 4) * 32 + (c % 8) * 4 + k % 4) of its
// step. A slice is copied to shared memory as it is; wgmma reads it through a descriptor, and an
// mma.sync B fragment (k = k8 + quad (+ 4), c = 8 j + group_row) is 32 consecutive floats, one
// per bank.
FUSED3D_HOST_DEVICE constexpr int w_index(int k, int c, int n) {
  return k / 8 * 8 * n + (2 * (c / 8) + k % 8 / 4) * 32 + c % 8 * 4 + k % 4;
}

// K's order, from the layer alone (the packed weights follow it and are cached per model, whatever
// x's extent).
struct ColumnOrder {
  int cin_per_group;
  int chunk, chunks;      // input channels per footprint, and chunks per conv group
  int taps, taps_padded;  // kd * kh * kw, rounded up so that taps_padded * chunk is whole slices
};

// Channels per chunk: 16 with one tap (kernel 1: K is the channels), else 4 up to 4 channels per
// conv group and 8 beyond (8 channels' footprints fill 14 slices of a kernel-3 layer at a time).
ColumnOrder column_order(const FusedLayer& layer);

// A layer's boxes: the conv settings (ConvSpatial, fused_layer.h), K's order, the box shape and
// the footprint.
struct Tiling : ConvSpatial, ColumnOrder {
  int rows, columns;            // output rows and columns per box: rows * columns = kBoxPositions
  int shift;                    // columns the footprint starts early along W: (-pw) mod 4
  int fd, fh, fw;               // the footprint's extent: a tensor copy's box, dense in shared memory
  int pitch;                    // floats from one channel's footprint to the next: fd * fh * fw
  int boxes_h, boxes_w, boxes;  // boxes per output plane along H and W, and per sample
};

// The box's first output position.
struct BoxOrigin {
  int od, oh, ow;
};

FUSED3D_HOST_DEVICE BoxOrigin box_origin(const Tiling& t, int box) {
  const int plane = t.boxes_h * t.boxes_w;
  const int od = box / plane, bh = (box - od * plane) / t.boxes_w, bw = box - od * plane - bh * t.boxes_w;
  return {od, bh * t.rows, bw * t.columns};
}

// Slices of kBlockK columns per chunk.
FUSED3D_HOST_DEVICE int slices_per_chunk(const Tiling& t) { return t.taps_padded * t.chunk / Traits::kBlockK; }

FUSED3D_HOST_DEVICE int row_offset(const Tiling& t, int p) {
  const int r = p / t.columns, c = p - r * t.columns;
  return r * t.sh * t.fw + c * t.sw + t.shift;
}

// The input coordinates of the box's footprint element (0, 0, 0). Along W it starts `shift`
// columns early, at a multiple of 4: a tensor copy whose innermost start is not 16-byte aligned
// stops the kernel with an illegal instruction (H200), which padding along W would otherwise give.
struct FootprintStart {
  int z, y, x;
};
FUSED3D_HOST_DEVICE FootprintStart footprint_start(const Tiling& t, const BoxOrigin& o) {
  return {o.od * t.sd - t.pd, o.oh * t.sh - t.ph, o.ow * t.sw - t.pw - t.shift};
}

// k within one chunk's columns (0 <= k < taps_padded * chunk).
FUSED3D_HOST_DEVICE int column_offset(const Tiling& t, int k) {
  const int tap = k / t.chunk, ci = k - tap * t.chunk;
  if (tap >= t.taps) return ci * t.pitch;  // zero weights; an element the position reads at tap 0
  const int plane = t.kh * t.kw;
  const int kd = tap / plane, kh = (tap - kd * plane) / t.kw, kw = tap - kd * plane - kh * t.kw;
  return ci * t.pitch + (kd * t.dd * t.fh + kh * t.dh) * t.fw + kw * t.dw;
}

// Shared memory per block beyond W's stages: two chunks' footprints.
FUSED3D_HOST_DEVICE size_t shared_bytes(const Tiling& t) { return 2 * static_cast<size_t>(t.chunk) * t.pitch * sizeof(float); }

// The tiling for x's spatial extent: the box shape that pads the output plane least (the smaller
// footprint on a tie), and the layer's column order.
Tiling tiling(const at::Tensor& x, const FusedLayer& layer);

// Whether the kernel takes the layer: float32 x on sm_90 on (tensor copies), W a multiple of 4 and
// x 16-byte aligned (the tensor map's strides and base), footprints of at most kMaxBoxExtent per
// axis, two chunks' footprints within kMaxSharedBytes and a chunk's k8 steps within
// kMaxColumnSteps. The rest (float16 / bfloat16 inputs
// among them) goes to the implicit-GEMM kernel.
bool can_run(const at::Tensor& x, const FusedLayer& layer);

// The weights as igemm::IgemmWeights with K in this kernel's order (above): per (conv group,
// block of channels) K / kBlockK slices of kBlockK x 8 * n_tiles float32 laid out by w_index,
// TF32-rounded hi (and lo in the accurate mode), zeros for padded taps, channels past Cin/G in the
// last chunk and channels past the group's.
igemm::IgemmWeights pack_weights(const FusedLayer& layer, Precision precision);

// Partial-moment tiles per sample (each of up to igemm::Traits::kMaxSteps boxes).
int tiles(const at::Tensor& x, const FusedLayer& layer);
// partials: (B, tiles, Cout) Moments<float> viewed as (B, tiles, Cout, 3) floats; x contiguous float32.
void launch(const at::Tensor& x, const FusedLayer& layer, const igemm::IgemmWeights& weights, int tiles,
            at::Tensor& partials, cudaStream_t stream);

}  // namespace fused3d::igemm_box
