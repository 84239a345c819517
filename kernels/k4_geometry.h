// The layer shape the two tensor-core kernels are specialized for (kernel 4x4x4, 16 output
// channels), and the warp tile of the mma.sync kernel and of the TF32 route both kernels share:
// constants and index arithmetic only, for host and device (the unit tests run it on the host).
#pragma once

#include "moments.h"  // FUSED3D_HOST_DEVICE

namespace fused3d::k4 {

constexpr int kKernel = 4;  // kernel extent along each axis
constexpr int kCout = 16;   // output channels: the mma.sync M, the wgmma N per kernel row
// One wgmma B tile of the planes kernel: K 16 (kd, kw) x N 64 (kh, channel), fp16.
constexpr int kPlanesTileHalves = 16 * kKernel * kCout;

// Both kernels run one block of 512 threads per SM, whose roles are whole warpgroups.
constexpr int kWarpsPerWarpgroup = 4;          // wgmma and setmaxnreg act on warpgroups
constexpr int kRegistersPerSm = 65536;          // the register file the warpgroups share
// The dynamic shared memory either kernel may take: the SM's 227 KB less room for the static part
// (barriers, moment slots).
constexpr int kMaxDynamicSharedBytes = 200 * 1024;

// The warp tile: kRows output rows x kCols columns, two n8 MMAs per row, the 16 channels in M.
struct WarpTileTraits {
  static constexpr int kRows = 10;  // output rows: 29 = 3 tiles with 1 row of overlap
  static constexpr int kCols = 16;  // output columns: two n8 MMAs
  static constexpr int kInputRows = kRows + kKernel - 1;
  static_assert(kKernel == 4, "the fragment mappings take kw = t (0..3), kd in plane pairs, kh in pairs (TF32)");
  static_assert(kCout == 16, "the weights are the m16 operand; the epilogue's groups have 1-16 channels");
  static_assert(kCols == 16, "two n8 MMAs per output row");
  static_assert(kRows >= 1 && kRows <= 16, "accumulators: 8 registers per row");
};
constexpr int kRows = WarpTileTraits::kRows;
constexpr int kCols = WarpTileTraits::kCols;
constexpr int kInputRows = WarpTileTraits::kInputRows;

// Where a warp tile sits: rows [oh0, oh0 + kRows) of the output, columns [ow0, ow0 + kCols).
struct WarpTile {
  int slab_row;        // oh0 relative to the first input row of the x pointer it reads from
  int ow0;
  int duplicate_rows;  // leading rows owned by the previous row tile
  int duplicate_cols;  // leading columns owned by the previous column tile
};

// The origin of tile `tile` of `size` along an axis of `extent`: the last tile shifts back to stay
// inside (its leading entries are duplicates of the previous tile's).
FUSED3D_HOST_DEVICE int tile_origin(int tile, int extent, int size) {
  return tile * size < extent - size ? tile * size : extent - size;
}

}  // namespace fused3d::k4
