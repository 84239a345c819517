// The index arithmetic of the fused CUDA kernels, on the host: the mma.sync kernel's walk over work
// items, how the planes kernel shares a batch's output planes among blocks and numbers their pair
// and input planes, the weight layouts against the PTX fragment layouts (the tensor cores read the
// packed weights by these formulas; a wrong permute would pass no GPU test at some shapes and every
// one at others), the implicit-GEMM kernel's gather and weights, the box kernel's footprints and column order and
// the depthwise kernel's tiling against libtorch's conv3d. Runs everywhere, CI included.
#include "conv3d_depthwise.h"
#include "conv3d_igemm.h"
#include "conv3d_igemm_box.h"
#include "conv3d_k4_mma.h"
#include "conv3d_k4_planes.h"
#include "k4_geometry.h"
#include "tensorcore_weights.h"
#include "test_support.h"
#include "wgmma.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

namespace fused3d::test {
namespace {

struct ItemGrid {
  int tiles, bands, ods;  // what item_coords and next_item read
};

// Walking a group's items from `first` by `stride` with next_item (a few adds) lands where the
// division form says, for every item of the batch the walk reaches.
TEST(Indexing, ItemWalkMatchesDivision) {
  for (const int ods : {1, 5, 13})
    for (const int bands : {1, 2, 3})
      for (const int batch : {1, 3, 64})
        for (const int stride : {1, 2, 7, 26, 132, 264}) {
          const ItemGrid p{ods * bands, bands, ods};
          const int items = batch * p.tiles;
          for (int first = 0; first < stride && first < items; ++first) {
            k4_mma::ItemCoords c = k4_mma::item_coords(p, first);
            const k4_mma::ItemCoords step = k4_mma::item_coords(p, stride);
            for (int item = first; item < items; item += stride) {
              const k4_mma::ItemCoords want = k4_mma::item_coords(p, item);
              ASSERT_EQ(c.n, want.n) << "item " << item << " stride " << stride;
              ASSERT_EQ(c.od, want.od) << "item " << item << " stride " << stride;
              ASSERT_EQ(c.band, want.band) << "item " << item << " stride " << stride;
              ASSERT_EQ((c.n * ods + c.od) * bands + c.band, item);
              c = k4_mma::next_item(p, c, step);
            }
            EXPECT_GE(c.n, batch) << "the walk ends past the batch";
          }
        }
}

TEST(Indexing, TileOriginsCoverTheExtentAndShiftTheLastBack) {
  for (const int extent : {10, 13, 29, 32, 61})
    for (const int size : {10, 16}) {
      if (extent < size) continue;
      std::vector<int> owner(extent, 0);
      for (int tile = 0; tile * size < extent; ++tile) {
        const int origin = k4::tile_origin(tile, extent, size);
        ASSERT_GE(origin, 0);
        ASSERT_LE(origin + size, extent) << "a tile stays inside";
        for (int i = tile * size; i < origin + size; ++i) ++owner[i];  // its own (non-duplicate) entries
      }
      for (int i = 0; i < extent; ++i) EXPECT_EQ(owner[i], 1) << "entry " << i << " of " << extent;
    }
}

struct PlaneBatch {
  int batch, ods;  // what block_planes and segment_of read
};

// Every block's share of the batch's output planes, its segments, and the numbers its producer
// (input and pair planes in stream order) and consumers (locate in consume_planes) give them.
TEST(Indexing, PlaneSharesPartitionTheBatchAndNumberTheirPlanesAlike) {
  for (const int ods : {6, 13, 20})
    for (const int batch : {1, 2, 7, 64, 529})
      for (const unsigned blocks : {1u, 7u, 132u, 264u}) {
        SCOPED_TRACE("B " + std::to_string(batch) + " OD " + std::to_string(ods) + " blocks " + std::to_string(blocks));
        const PlaneBatch p{batch, ods};
        const int total = batch * ods;
        int next = 0, least = total, most = 0;
        for (unsigned block = 0; block < blocks; ++block) {
          const k4_planes::PlaneRange r = k4_planes::block_planes(p, block, blocks);
          ASSERT_EQ(r.start, next) << "shares are contiguous and in order";
          next += r.count;
          least = std::min(least, r.count);
          most = std::max(most, r.count);
          if (r.count == 0) continue;
          ASSERT_EQ(r.first_sample, r.start / ods);
          // The producer's walk: for each segment, pair planes b .. e + 1 (numbered q), made from
          // input planes b .. e + 2 (numbered in copy order).
          const int segments = k4_planes::segment_count(p, r);
          int covered = 0, q = 0, input = 0;
          std::vector<int> pair_of_plane, first_input_of_pair;
          for (int seg = 0; seg < segments; ++seg) {
            const k4_planes::Segment s = k4_planes::segment_of(p, r, seg);
            ASSERT_EQ(s.sample, r.first_sample + seg);
            ASSERT_LT(s.sample, batch);
            ASSERT_GE(s.b, 0);
            ASSERT_LT(s.b, s.e) << "a segment has an output plane";
            ASSERT_LE(s.e, ods);
            ASSERT_EQ(s.sample * ods + s.b, r.start + covered) << "segments follow each other";
            covered += s.e - s.b;
            const int first_input_of_segment = input;
            input += s.e + k4::kKernel - 1 - s.b;  // input planes b .. e + 2
            for (int plane = s.b; plane <= s.e + 1; ++plane, ++q) {
              const int at = s.sample * ods + plane - r.start;  // as produce_planes numbers it
              EXPECT_EQ(at + 3 * seg, first_input_of_segment + plane - s.b) << "first input plane of pair plane " << q;
              if (plane < s.e) {
                EXPECT_EQ(static_cast<int>(pair_of_plane.size()), at) << "output planes in stream order";
                pair_of_plane.push_back(q);
              }
            }
          }
          ASSERT_EQ(covered, r.count);
          // The consumers' locate: output plane `at` of the stream has its pp = 0 pair plane at
          // at + 2 * (n - first_sample), the number the producer gave it.
          for (int at = 0; at < r.count; ++at) {
            const int n = (r.start + at) / ods;
            EXPECT_EQ(at + 2 * (n - r.first_sample), pair_of_plane[at]) << "output plane " << at;
          }
        }
        EXPECT_EQ(next, total) << "the shares cover the batch";
        EXPECT_LE(most - least, 1) << "equal shares to one plane";
      }
}

// A random layer's weights as packed for the tensor cores, element by element against the
// weights through the PTX ISA's fragment layouts:
//   mma.m16n8k16 A (fp16): register pair i of lane (g, t) holds row g + 8 * ((i / 2) % 2), columns
//     2t + i % 2 + 8 * (i / 4);
//   mma.m16n8k8 A (tf32): register i holds row g + 8 * (i % 2), column t + 4 * (i / 2);
//   wgmma B (K 16 x N 64, K-major, no swizzle): element (k, n) at wgmma::b_offset(k, n).
// with K = 16 as (kd, kw): k = 8 * pp + 2 * kw + kdl, kd = 2 * pp + kdl (fp16 paths), and K = 8 as
// (kh pair half s, kw): k = kw + 4 * s, kh = 2 * q + s (TF32). Rows are output channels, except in
// wgmma B, where n = 16 * kh + channel.
TEST(Indexing, TensorcoreWeightsFollowTheFragmentLayouts) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(41);
  for (const int64_t cin : {1, 3}) {
    SCOPED_TRACE("Cin " + std::to_string(cin));
    FusedLayer layer;
    layer.weight = at::randn({16, cin, 4, 4, 4}, gen);
    layer.bias = at::randn({16}, gen);
    const k4::TensorcoreWeights tc = k4::pack_tensorcore_weights(layer, Precision::kAccurate);
    ASSERT_EQ(tc.parts, 2);
    const at::Tensor w64 = layer.weight.to(at::kDouble), scale64 = tc.half_unscale.reciprocal().to(at::kDouble);
    const at::Tensor hi_tf32 = k4::round_to_tf32(layer.weight);
    const at::Tensor lo_tf32 = k4::round_to_tf32(layer.weight - hi_tf32);
    const auto w = w64.accessor<double, 5>();
    const auto scale = scale64.accessor<double, 1>();
    const auto half_of = [](double v) { return static_cast<double>(static_cast<float>(c10::Half(static_cast<float>(v)))); };
    const auto scaled = [&](int co, int ci, int kd, int kh, int kw) { return w[co][ci][kd][kh][kw] * scale[co]; };
    const at::Tensor frag64 = tc.half_fragments.to(at::kDouble), tiles64 = tc.wgmma_tiles.to(at::kDouble);
    const at::Tensor tf64 = tc.tf32_fragments.to(at::kDouble);
    const at::Tensor hi64 = hi_tf32.to(at::kDouble), lo64 = lo_tf32.to(at::kDouble);
    const auto frag = frag64.accessor<double, 5>();   // (ci, kh, part, lane, 8)
    const auto tiles = tiles64.accessor<double, 3>();  // (ci, part, 1024)
    const auto tf32 = tf64.accessor<double, 6>();      // (ci, kd, q, part, lane, 4)
    const auto hi = hi64.accessor<double, 5>(), lo = lo64.accessor<double, 5>();
    for (int ci = 0; ci < cin; ++ci) {
      for (int kh = 0; kh < 4; ++kh)
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < 8; ++i) {
            const int g = lane / 4, t = lane % 4;
            const int row = g + 8 * ((i / 2) % 2), k = 2 * t + i % 2 + 8 * (i / 4);
            const int kd = 2 * (k / 8) + k % 2, kw = (k % 8) / 2;
            const double v = scaled(row, ci, kd, kh, kw), v_hi = half_of(v);
            ASSERT_EQ(frag[ci][kh][0][lane][i], v_hi) << "mma.sync A, kh " << kh << " lane " << lane << " half " << i;
            ASSERT_EQ(frag[ci][kh][1][lane][i], half_of(v - v_hi)) << "mma.sync A lo part";
          }
      for (int part = 0; part < 2; ++part)
        for (int k = 0; k < 16; ++k)
          for (int n = 0; n < 64; ++n) {
            const int kd = 2 * (k / 8) + k % 2, kw = (k % 8) / 2, kh = n / 16, co = n % 16;
            const double v = scaled(co, ci, kd, kh, kw), v_hi = half_of(v);
            ASSERT_EQ(tiles[ci][part][wgmma::b_offset(k, n)], part == 0 ? v_hi : half_of(v - v_hi))
                << "wgmma B, part " << part << " (k, n) = (" << k << ", " << n << ")";
          }
      for (int kd = 0; kd < 4; ++kd)
        for (int q = 0; q < 2; ++q)
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < 4; ++i) {
              const int g = lane / 4, t = lane % 4;
              const int row = g + 8 * (i % 2), k = t + 4 * (i / 2);
              const int kw = k % 4, kh = 2 * q + k / 4;
              ASSERT_EQ(tf32[ci][kd][q][0][lane][i], hi[row][ci][kd][kh][kw])
                  << "mma.sync TF32 A, kd " << kd << " q " << q << " lane " << lane << " register " << i;
              ASSERT_EQ(tf32[ci][kd][q][1][lane][i], lo[row][ci][kd][kh][kw]) << "TF32 lo part";
            }
    }
  }
}

// The implicit-GEMM kernel's GEMM, built on the host from its own index functions (row_of,
// column_of, inside: conv3d_igemm.h) and packed weights (hi + lo), in double, against libtorch's
// conv3d in double: every layer of the shape matrix (padding edges, more padding than the kernel
// reaches, stride, dilation, conv groups, depthwise) and channel counts that take each n-tile width
// and several channel blocks. The kernel reads A[m, k] at row.offset + column.offset from the conv
// group's first input element where the layer has no padding or inside() holds, and 0 elsewhere;
// W[k, c] from block c / N, column c % N. Also: without padding every column of every position is
// inside; the columns past K read nothing (padded) or an element the row reads at k = 0; the
// padding of W is zero.
TEST(Indexing, ImplicitGemmGatherAndWeightsReproduceConv3d) {
  using T3 = std::array<int64_t, 3>;
  std::vector<LayerSpec> specs = shape_matrix();
  specs.push_back({1, 2, 130, 13, {3, 3, 3}, {5, 6, 7}, true, true, T3{1, 1, 1}, T3{1, 0, 1}});  // 3 blocks of 64
  specs.push_back({1, 4, 40, 4, {1, 3, 5}, {4, 7, 9}, false, true, T3{2, 1, 2}, T3{0, 1, 2}, T3{1, 2, 1}, 2});
  specs.push_back({1, 6, 6, 6, {3, 3, 3}, {5, 5, 5}, true, true, T3{1, 1, 1}, T3{1, 1, 1}, T3{1, 1, 1}, 6});
  specs.push_back({1, 4, 8, 2, {2, 3, 2}, {7, 9, 8}, true, true, T3{3, 2, 1}, T3{0, 0, 0}, T3{2, 1, 3}, 2});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(42);
  for (LayerSpec spec : specs) {
    spec.batch = 1;
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    const at::Tensor x = random_input(spec, gen).to(at::kDouble);
    const igemm::Geometry g = igemm::geometry(x, layer);
    const igemm::IgemmWeights packed = igemm::pack_weights(layer, Precision::kAccurate);
    ASSERT_TRUE(packed.lo.defined());
    const int n = 8 * packed.n_tiles;
    const int64_t groups = layer.conv_groups, per_group = layer.out_channels() / groups;
    const int64_t cin_g = layer.in_channels();
    ASSERT_EQ(g.k_total, cin_g * g.taps);
    ASSERT_EQ(g.padded, (spec.padding != T3{0, 0, 0}));
    ASSERT_EQ(packed.blocks, (per_group + n - 1) / n);
    ASSERT_GE(n, std::min<int64_t>(per_group, 64)) << "one block takes a group of up to 64 channels";
    const int64_t k_padded = packed.hi.size(1);
    ASSERT_EQ(k_padded % igemm::Traits::kBlockK, 0);
    ASSERT_GE(k_padded, g.k_total);
    const at::Tensor w = (packed.hi.to(at::kDouble) + packed.lo.to(at::kDouble));
    const auto wa = w.accessor<double, 3>();
    const auto xa = x.accessor<double, 5>();
    const double* xd = x.data_ptr<double>();
    const auto bias = packed.bias.accessor<float, 2>();
    for (int64_t b = 0; b < w.size(0); ++b)  // zero padding of W: channels past the group's, K past k_total
      for (int64_t k = 0; k < k_padded; ++k)
        for (int c = 0; c < n; ++c)
          if ((b % packed.blocks) * n + c >= per_group || k >= g.k_total) ASSERT_EQ(wa[b][k][c], 0.0);
    const at::Tensor ref = at::conv3d(x, layer.weight.to(at::kDouble), layer.bias.defined() ? layer.bias.to(at::kDouble) : at::Tensor(),
                                      layer.stride, layer.padding, layer.dilation, groups)
                               .reshape({layer.out_channels(), g.positions});
    const auto ra = ref.accessor<double, 2>();
    const int channel_stride = g.d * g.h * g.w;
    std::vector<double> a(k_padded);
    for (int m = 0; m < g.positions; ++m) {
      const igemm::Row row = igemm::row_of(g, m);
      for (int64_t group = 0; group < groups; ++group) {
        const double* xs = xd + group * cin_g * channel_stride;
        for (int k = 0; k < k_padded; ++k) {
          const igemm::Column c = igemm::column_of(g, k);
          const bool in = igemm::inside(g, row, c);
          if (!g.padded) ASSERT_TRUE(in) << "without padding every column is inside, k " << k;
          a[k] = in ? xs[row.offset + c.offset] : 0.0;
          if (k >= g.k_total) {
            if (in) ASSERT_EQ(a[k], a[0]) << "a column past K reads the row's own first element";
            continue;
          }
          const int ci = static_cast<int>(k / g.taps);
          if (in)  // the offset names the element the coordinates name
            ASSERT_EQ(a[k], xa[0][group * cin_g + ci][row.z + c.dz][row.y + c.dy][row.x + c.dx]) << "k " << k;
        }
        for (int64_t c = 0; c < per_group; ++c) {
          const int64_t block = group * packed.blocks + c / n;
          double sum = bias[block][c % n];
          for (int64_t k = 0; k < k_padded; ++k) sum += a[k] * wa[block][k][c % n];
          const double want = ra[group * per_group + c][m];
          ASSERT_NEAR(sum, want, 1e-6 * (1.0 + std::abs(want))) << "position " << m << " channel " << group * per_group + c;
        }
      }
    }
  }
}

// The TF32 parts: hi has TF32's 10 stored mantissa bits, lo carries what hi lost to within 2^-22
// of the weight, and the products split only for float32 in the accurate mode.
TEST(Indexing, ImplicitGemmWeightPartsAreTf32) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(43);
  const LayerSpec spec{1, 5, 24, 4, {3, 3, 3}, {5, 5, 5}, true, true};
  const FusedLayer layer = random_layer(spec, gen);
  const igemm::IgemmWeights packed = igemm::pack_weights(layer, Precision::kAccurate);
  for (const at::Tensor& part : {packed.hi, packed.lo})
    EXPECT_EQ(part.view(at::kInt).bitwise_and(0x1FFF).count_nonzero().item<int64_t>(), 0) << "low 13 bits zero";
  const at::Tensor w = packed.hi.to(at::kDouble) + packed.lo.to(at::kDouble);
  const at::Tensor exact = igemm::pack_weights(layer, Precision::kTF32).hi.to(at::kDouble);
  EXPECT_FALSE(igemm::pack_weights(layer, Precision::kTF32).lo.defined());
  const at::Tensor original = at::constant_pad_nd(layer.weight.reshape({24, -1}).t().to(at::kDouble),
                                                  {0, 32 - 24, 0, packed.hi.size(1) - 135});
  EXPECT_LE((w[0] - original).abs().max().item<double>(), std::ldexp(1.0, -22) * original.abs().max().item<double>());
  EXPECT_LE((exact[0] - original).abs().max().item<double>(), std::ldexp(1.0, -11) * original.abs().max().item<double>());
  // float16 / bfloat16 models: W as (block, slice, channel, k) in their dtype, the same values.
  for (const at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const FusedLayer half_layer = layer_to(layer, at::kCPU, dtype);
    const igemm::IgemmWeights h = igemm::pack_weights(half_layer, Precision::kAccurate);
    ASSERT_FALSE(h.lo.defined());
    ASSERT_EQ(h.half.scalar_type(), dtype);
    const int64_t slices = h.hi.size(1) / igemm::Traits::kBlockK;
    ASSERT_EQ(h.half.sizes(), at::IntArrayRef({h.hi.size(0), slices, h.hi.size(2), igemm::Traits::kBlockK}));
    const at::Tensor from_hi = h.hi.reshape({h.hi.size(0), slices, igemm::Traits::kBlockK, h.hi.size(2)}).transpose(2, 3);
    EXPECT_TRUE(at::equal(h.half.to(at::kFloat), from_hi)) << "the 16-bit layout holds W's values";
    EXPECT_TRUE(at::equal(h.hi, igemm::pack_weights(layer_to(half_layer, at::kCPU, at::kFloat), Precision::kTF32).hi));
  }
  EXPECT_TRUE(igemm::splits(at::kFloat, Precision::kAccurate));
  EXPECT_FALSE(igemm::splits(at::kFloat, Precision::kTF32));
  EXPECT_FALSE(igemm::splits(at::kHalf, Precision::kAccurate));
  EXPECT_FALSE(igemm::splits(at::kBFloat16, Precision::kAccurate));
}


// The box implicit-GEMM kernel's GEMM, built on the host from its own index functions (box_origin,
// row_offset, column_offset: conv3d_igemm_box.h) and packed weights (hi + lo), in double, against
// libtorch's conv3d in double: the shape matrix and layers that take each box shape, each chunk
// width (4, 8, 16 with one tap, several chunks with a partial last one), padded taps, stride,
// dilation, padding beyond the kernel's reach and conv groups. The kernel fills chunk j's
// footprints with x at footprint_start plus (fz, fy, fx) (16-byte aligned along W), 0 outside the
// input and for channels past the group's, and reads A[p, k] at row_offset(p) + column_offset(k). Also:
// every output position belongs to exactly one box; a lane's columns 8q + quad read
// column_offset(8q) + quad * pitch (the kernel adds the quad's part once per step); every read of a
// box's 128 positions stays inside the chunk's footprints; the footprints are the dense box a
// tensor copy writes (rows of whole 16-byte pieces), their pitch 8 or 24 mod 32 (16 where the depth
// is 4 mod 8); W is zero where it is padding.
TEST(Indexing, BoxFootprintsAndColumnsReproduceConv3d) {
  using T3 = std::array<int64_t, 3>;
  std::vector<LayerSpec> specs = shape_matrix();
  specs.push_back({1, 3, 16, 4, {3, 3, 3}, {4, 20, 64}, true, true, T3{1, 1, 1}, T3{1, 1, 1}});  // 4 x 32 boxes
  specs.push_back({1, 12, 20, 4, {3, 3, 3}, {5, 19, 17}, true, true});                         // 8 x 16; chunks of 8, 4 channels in the last
  specs.push_back({1, 5, 8, 2, {2, 3, 2}, {7, 30, 6}, false, true, T3{1, 1, 1}, T3{0, 2, 0}, T3{2, 1, 1}});  // 16 x 8
  specs.push_back({1, 20, 24, 4, {1, 1, 1}, {3, 9, 11}, true, true});                          // one tap: chunks of 16
  specs.push_back({1, 4, 8, 2, {1, 3, 5}, {4, 9, 20}, true, false, T3{2, 2, 3}, T3{0, 3, 2}, T3{1, 1, 2}, 2});
  specs.push_back({1, 6, 6, 6, {3, 3, 3}, {5, 5, 5}, true, true, T3{1, 1, 1}, T3{1, 1, 1}, T3{1, 1, 1}, 6});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(46);
  std::map<int, int> shapes, chunks;
  for (LayerSpec spec : specs) {
    spec.batch = 1;
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    const at::Tensor x = random_input(spec, gen).to(at::kDouble);
    const igemm_box::Tiling t = igemm_box::tiling(x, layer);
    ++shapes[t.columns];
    ++chunks[t.chunk];
    ASSERT_EQ(t.rows * t.columns, igemm_box::Traits::kBoxPositions);
    ASSERT_EQ(t.pitch, t.fd * t.fh * t.fw) << "a tensor copy's box, dense";
    ASSERT_EQ(t.fw % 4, 0) << "rows of whole 16-byte pieces";
    ASSERT_GE(t.fw, t.shift + (t.columns - 1) * t.sw + (t.kw - 1) * t.dw + 1);
    ASSERT_EQ(t.shift, ((-t.pw) % 4 + 4) % 4);
    ASSERT_GE(t.fh, (t.rows - 1) * t.sh + (t.kh - 1) * t.dh + 1);
    if (t.fd % 8 == 0)
      ;  // every pitch is 0 mod 32
    else if (t.fd % 4 == 0)
      ASSERT_EQ(t.pitch % 32, 16) << "the depth allows no better";
    else
      ASSERT_TRUE(t.pitch % 32 == 8 || t.pitch % 32 == 24) << "pitch " << t.pitch;
    ASSERT_EQ(t.taps_padded * t.chunk % igemm_box::Traits::kBlockK, 0);
    ASSERT_GE(t.chunks * t.chunk, t.cin_per_group);
    ASSERT_LT((t.chunks - 1) * t.chunk, t.cin_per_group) << "no chunk is all padding";
    const int columns_per_chunk = t.taps_padded * t.chunk;
    int widest = 0;
    for (int k = 0; k < columns_per_chunk; ++k) widest = std::max(widest, igemm_box::column_offset(t, k));
    for (int q = 0; q < columns_per_chunk / 8; ++q)
      for (int quad = 0; quad < 4; ++quad)
        for (const int half : {0, 4})
          ASSERT_EQ(igemm_box::column_offset(t, 8 * q + half + quad), igemm_box::column_offset(t, 8 * q + half) + quad * t.pitch)
              << "step " << q << " quad " << quad;
    for (int p = 0; p < igemm_box::Traits::kBoxPositions; ++p)
      ASSERT_LT(igemm_box::row_offset(t, p) + widest, t.chunk * t.pitch) << "position " << p << " reads past its chunk";

    const igemm::IgemmWeights packed = igemm_box::pack_weights(layer, Precision::kAccurate);
    ASSERT_TRUE(packed.lo.defined());
    const int n = 8 * packed.n_tiles;
    const int64_t groups = layer.conv_groups, per_group = layer.out_channels() / groups;
    ASSERT_EQ(packed.hi.size(1), int64_t{t.chunks} * columns_per_chunk);
    // W's element (k, c) of block b at [b][w_index(k, c, n)].
    const at::Tensor w = (packed.hi.to(at::kDouble) + packed.lo.to(at::kDouble)).reshape({packed.hi.size(0), -1});
    const auto wa = w.accessor<double, 2>();
    const auto bias = packed.bias.accessor<float, 2>();
    for (int64_t b = 0; b < w.size(0); ++b)
      for (int64_t k = 0; k < packed.hi.size(1); ++k) {
        const int local = static_cast<int>(k % columns_per_chunk), tap = local / t.chunk;
        const int ci = static_cast<int>(k / columns_per_chunk) * t.chunk + local % t.chunk;
        for (int c = 0; c < n; ++c)
          if ((b % packed.blocks) * n + c >= per_group || tap >= t.taps || ci >= t.cin_per_group)
            ASSERT_EQ(wa[b][igemm_box::w_index(static_cast<int>(k), c, n)], 0.0) << "padding weighs 0: k " << k << " channel " << c;
      }
    const at::Tensor ref = at::conv3d(x, layer.weight.to(at::kDouble), layer.bias.defined() ? layer.bias.to(at::kDouble) : at::Tensor(),
                                      layer.stride, layer.padding, layer.dilation, groups);
    ASSERT_EQ(ref.sizes(), at::IntArrayRef({1, layer.out_channels(), t.od, t.oh, t.ow}));
    const auto ra = ref.accessor<double, 5>();
    const auto xa = x.accessor<double, 5>();
    at::Tensor covered = at::zeros({t.od, t.oh, t.ow}, at::kInt);
    auto ca = covered.accessor<int, 3>();
    std::vector<double> footprints(static_cast<size_t>(t.chunks) * t.chunk * t.pitch);  // every chunk's, one after another
    for (int64_t g = 0; g < groups; ++g)
      for (int box = 0; box < t.boxes; ++box) {
        const igemm_box::BoxOrigin o = igemm_box::box_origin(t, box);
        const igemm_box::FootprintStart f = igemm_box::footprint_start(t, o);
        ASSERT_EQ(((f.x % 4) + 4) % 4, 0) << "a tensor copy's innermost start is 16-byte aligned";
        ASSERT_EQ(f.x, o.ow * t.sw - t.pw - t.shift);
        ASSERT_EQ(f.z, o.od * t.sd - t.pd);
        ASSERT_EQ(f.y, o.oh * t.sh - t.ph);
        std::fill(footprints.begin(), footprints.end(), std::nan(""));
        for (int c = 0; c < t.chunks * t.chunk; ++c)
          for (int fz = 0; fz < t.fd; ++fz)
            for (int fy = 0; fy < t.fh; ++fy)
              for (int fx = 0; fx < t.fw; ++fx) {
                const int z = f.z + fz, y = f.y + fy, xi = f.x + fx;
                const bool inside = c < t.cin_per_group && z >= 0 && z < t.d && y >= 0 && y < t.h && xi >= 0 && xi < t.w;
                footprints[static_cast<size_t>(c) * t.pitch + (fz * t.fh + fy) * t.fw + fx] =
                    inside ? xa[0][g * t.cin_per_group + c][z][y][xi] : 0.0;
              }
        for (int p = 0; p < igemm_box::Traits::kBoxPositions; ++p) {
          const int oh = o.oh + p / t.columns, ow = o.ow + p % t.columns;
          if (oh >= t.oh || ow >= t.ow) continue;
          if (g == 0) ++ca[o.od][oh][ow];
          for (int64_t ch = 0; ch < per_group; ++ch) {
            const int64_t block = g * packed.blocks + ch / n;
            double sum = bias[block][ch % n];
            for (int j = 0; j < t.chunks; ++j)
              for (int k = 0; k < columns_per_chunk; ++k) {
                const double a = footprints[static_cast<size_t>(j) * t.chunk * t.pitch + igemm_box::row_offset(t, p) +
                                            igemm_box::column_offset(t, k)];
                ASSERT_FALSE(std::isnan(a)) << "a read outside every channel's footprint";
                sum += a * wa[block][igemm_box::w_index(j * columns_per_chunk + k, static_cast<int>(ch % n), n)];
              }
            const double want = ra[0][g * per_group + ch][o.od][oh][ow];
            ASSERT_NEAR(sum, want, 1e-6 * (1.0 + std::abs(want)))
                << "box " << box << " position " << o.od << "," << oh << "," << ow << " channel " << g * per_group + ch;
          }
        }
      }
    EXPECT_TRUE(at::equal(covered, at::ones_like(covered))) << "every output position in exactly one box";
  }
  EXPECT_EQ(shapes.size(), 3u) << "each box shape is taken";
  EXPECT_EQ(chunks.size(), 3u) << "each chunk width is taken";
}

// What the box kernel's footprints cannot hold goes to the implicit-GEMM kernel: a footprint over
// the shared-memory budget (stride and dilation 8 along H and W), and kernel 7 with 8 channels per
// chunk (7 x 14 x 22 floats a channel in 8 x 16 boxes, more in the others); the same kernel 7 with
// 4 channels fits.
TEST(Indexing, BoxFootprintsWithinSharedMemory) {
  using T3 = std::array<int64_t, 3>;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(47);
  const auto fits = [&](const LayerSpec& spec) {
    return igemm_box::shared_bytes(igemm_box::tiling(random_input(spec, gen), random_layer(spec, gen))) <=
           static_cast<size_t>(igemm_box::Traits::kMaxSharedBytes);
  };
  EXPECT_FALSE(fits({1, 1, 1, 1, {1, 7, 7}, {2, 60, 60}, true, true, T3{1, 8, 8}, T3{0, 0, 0}, T3{1, 8, 8}, 1}));
  EXPECT_FALSE(fits({1, 8, 16, 4, {7, 7, 7}, {16, 32, 32}, true, true, T3{1, 1, 1}, T3{3, 3, 3}}));
  EXPECT_TRUE(fits({1, 4, 16, 4, {7, 7, 7}, {16, 32, 32}, true, true, T3{1, 1, 1}, T3{3, 3, 3}}));
  // Dilation 2 with 8 channels: 4 x 32 boxes pad the 12 x 28 output plane least and need 115 KB;
  // the layer goes to the implicit-GEMM kernel (8 x 16 boxes would fit and were slower in the
  // accurate mode, conv3d_igemm_box.cu's tiling).
  const LayerSpec dilated{1, 8, 32, 8, {3, 3, 3}, {16, 32, 32}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{2, 2, 2}};
  EXPECT_FALSE(fits(dilated));
  EXPECT_EQ(igemm_box::tiling(random_input(dilated, gen), random_layer(dilated, gen)).columns, 32);
}

// The depthwise kernel's tiling, on layers with one input channel per conv group: kernel sizes per
// axis, stride, padding, dilation, 1 to 4 channels per group, outputs narrower than a warp, tiles
// of 8, 4 and 1 planes (by the output's planes and what fits shared memory). The kernel fills a
// tile's footprint with x at the tile origin's input coordinates plus (fz, fy, fx), 0 outside the
// input, and computes output (j, r, c) of the tile from the footprint elements footprint_offset
// names: that reproduces libtorch's conv3d, every output position belongs to exactly one tile, and
// every thread's reads (those of positions past the output's end too) stay inside the footprint.
TEST(Indexing, DepthwiseTilesReproduceConv3d) {
  using T3 = std::array<int64_t, 3>;
  const struct {
    LayerSpec spec;
    int depth;
  } cases[] = {
      {{1, 4, 4, 2, {3, 3, 3}, {12, 11, 40}, true, true, T3{1, 1, 1}, T3{1, 1, 1}, T3{1, 1, 1}, 4}, 8},
      {{1, 3, 6, 3, {2, 3, 4}, {10, 10, 7}, false, true, T3{1, 2, 1}, T3{0, 1, 2}, T3{2, 1, 1}, 3}, 8},
      {{1, 2, 6, 2, {3, 1, 5}, {5, 6, 20}, true, false, T3{2, 1, 3}, T3{0, 0, 0}, T3{1, 1, 2}, 2}, 1},
      {{1, 2, 2, 1, {3, 3, 3}, {8, 9, 33}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 2}, 4},
      {{1, 2, 2, 1, {5, 5, 5}, {16, 40, 70}, true, true, T3{2, 2, 2}, T3{2, 2, 2}, T3{1, 1, 1}, 2}, 4},
      {{1, 2, 8, 4, {1, 1, 1}, {3, 4, 5}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 2}, 1},
      {{1, 1, 1, 1, {7, 7, 7}, {28, 28, 100}, true, true, T3{3, 3, 3}, T3{0, 0, 0}, T3{1, 1, 1}, 1}, 1},
  };
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(44);
  for (const auto& [spec, depth] : cases) {
    SCOPED_TRACE(to_string(spec));
    const FusedLayer layer = random_layer(spec, gen);
    const at::Tensor x32 = random_input(spec, gen);
    const at::Tensor x = x32.to(at::kDouble);
    ASSERT_TRUE(depthwise::can_run(x32, layer));
    const depthwise::Tiling t = depthwise::tiling(x, layer);
    ASSERT_EQ(t.depth, depth);
    ASSERT_EQ(t.rows * t.columns, depthwise::Traits::kThreads);
    ASSERT_LE(depthwise::shared_bytes(t), static_cast<size_t>(depthwise::Traits::kMaxSharedBytes));
    for (const int deeper : {depthwise::Traits::kDeepTile, depthwise::Traits::kHalfTile})
      if (depth < deeper && t.od >= deeper)
        ASSERT_GT(depthwise::shared_bytes(depthwise::tiling(x, layer, deeper)),
                  static_cast<size_t>(depthwise::Traits::kMaxSharedBytes))
            << "deeper tiles are taken where they fit";
    const int footprint_size = t.fd * t.fh * t.fw;
    ASSERT_EQ(depthwise::footprint_offset(t, t.depth - 1, t.rows - 1, t.columns - 1, t.kd - 1, t.kh - 1, t.kw - 1),
              footprint_size - 1)
        << "the last thread's last tap reads the footprint's last element";

    const depthwise::DepthwiseWeights packed = depthwise::pack_weights(layer);
    const int64_t groups = layer.conv_groups, m = layer.out_channels() / groups, taps = t.kd * t.kh * t.kw;
    ASSERT_EQ(packed.weight.sizes(), at::IntArrayRef({groups, taps, depthwise::Traits::kMaxMultiplier}));
    ASSERT_EQ(packed.bias.sizes(), at::IntArrayRef({groups, depthwise::Traits::kMaxMultiplier}));
    const auto wa = packed.weight.accessor<float, 3>();
    const auto ba = packed.bias.accessor<float, 2>();
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t c = m; c < depthwise::Traits::kMaxMultiplier; ++c) {
        ASSERT_EQ(ba[g][c], 0.f);
        for (int64_t k = 0; k < taps; ++k) ASSERT_EQ(wa[g][k][c], 0.f) << "channels past the group's weigh 0";
      }
    const at::Tensor ref = at::conv3d(x, layer.weight.to(at::kDouble), layer.bias.defined() ? layer.bias.to(at::kDouble) : at::Tensor(),
                                      layer.stride, layer.padding, layer.dilation, groups);
    ASSERT_EQ(ref.sizes(), at::IntArrayRef({1, layer.out_channels(), t.od, t.oh, t.ow}));
    const auto ra = ref.accessor<double, 5>();
    const auto xa = x.accessor<double, 5>();
    at::Tensor covered = at::zeros({t.od, t.oh, t.ow}, at::kInt);
    auto ca = covered.accessor<int, 3>();
    std::vector<double> footprint(footprint_size);
    for (int64_t g = 0; g < groups; ++g)
      for (int tile = 0; tile < t.tiles; ++tile) {
        const depthwise::TileOrigin o = depthwise::tile_origin(t, tile);
        for (int fz = 0; fz < t.fd; ++fz)
          for (int fy = 0; fy < t.fh; ++fy)
            for (int fx = 0; fx < t.fw; ++fx) {
              const int z = o.od * t.sd - t.pd + fz, y = o.oh * t.sh - t.ph + fy, xi = o.ow * t.sw - t.pw + fx;
              const bool inside = z >= 0 && z < t.d && y >= 0 && y < t.h && xi >= 0 && xi < t.w;
              footprint[(fz * t.fh + fy) * t.fw + fx] = inside ? xa[0][g][z][y][xi] : 0.0;
            }
        for (int j = 0; j < t.depth; ++j)
          for (int r = 0; r < t.rows; ++r)
            for (int c = 0; c < t.columns; ++c) {
              const int od = o.od + j, oh = o.oh + r, ow = o.ow + c;
              if (od >= t.od || oh >= t.oh || ow >= t.ow) continue;
              if (g == 0) ++ca[od][oh][ow];
              for (int64_t ch = 0; ch < m; ++ch) {
                double sum = ba[g][ch];
                int tap = 0;
                for (int kd = 0; kd < t.kd; ++kd)
                  for (int kh = 0; kh < t.kh; ++kh)
                    for (int kw = 0; kw < t.kw; ++kw, ++tap)
                      sum += footprint[depthwise::footprint_offset(t, j, r, c, kd, kh, kw)] * wa[g][tap][ch];
                const double want = ra[0][g * m + ch][od][oh][ow];
                ASSERT_NEAR(sum, want, 1e-6 * (1.0 + std::abs(want)))
                    << "tile " << tile << " position " << od << "," << oh << "," << ow << " channel " << g * m + ch;
              }
            }
      }
    EXPECT_TRUE(at::equal(covered, at::ones_like(covered))) << "every output position in exactly one tile";
  }
}

// What the depthwise kernel refuses goes to the implicit-GEMM kernel: two input channels per
// group, five output channels per group, and a footprint over the shared-memory budget even for a
// single plane (stride and dilation 8 along H and W: 297 x 105 floats); float64 no kernel takes.
TEST(Indexing, DepthwiseRefusesWhatItCannotTile) {
  using T3 = std::array<int64_t, 3>;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(45);
  const LayerSpec refused[] = {
      {1, 4, 4, 2, {3, 3, 3}, {5, 5, 5}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 2},
      {1, 2, 10, 2, {3, 3, 3}, {5, 5, 5}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 2},
      {1, 1, 1, 1, {1, 7, 7}, {2, 60, 60}, true, true, T3{1, 8, 8}, T3{0, 0, 0}, T3{1, 8, 8}, 1},
  };
  for (const LayerSpec& spec : refused) {
    SCOPED_TRACE(to_string(spec));
    EXPECT_FALSE(depthwise::can_run(random_input(spec, gen), random_layer(spec, gen)));
  }
  const LayerSpec depthwise{1, 2, 2, 1, {3, 3, 3}, {5, 5, 5}, true, true, T3{1, 1, 1}, T3{0, 0, 0}, T3{1, 1, 1}, 2};
  const FusedLayer layer = random_layer(depthwise, gen);
  EXPECT_TRUE(depthwise::can_run(random_input(depthwise, gen), layer));
  EXPECT_FALSE(depthwise::can_run(random_input(depthwise, gen).to(at::kDouble), layer)) << "float64 is refused";
}

// The box kernel's W slices (w_index) are wgmma B tiles: a TF32 element (k, c) of a k8 step holds
// the bytes of the fp16 elements (2 k, c) and (2 k + 1, c) of the layout the planes kernel's
// descriptor reads (wgmma::b_offset), so one descriptor serves both.
TEST(Indexing, BoxWeightsAreWgmmaTiles) {
  for (const int n : {8, 16, 32, 64})
    for (int k = 0; k < 16; ++k)
      for (int c = 0; c < n; ++c) {
        const int step = k / 8, kk = k % 8;
        ASSERT_EQ(4 * igemm_box::w_index(k, c, n), step * 8 * n * 4 + 2 * wgmma::b_offset(2 * kk, c)) << "k " << k << " c " << c;
        ASSERT_EQ(2 * wgmma::b_offset(2 * kk + 1, c), 2 * wgmma::b_offset(2 * kk, c) + 2) << "a TF32 element's two halves";
      }
}

}  // namespace
}  // namespace fused3d::test
