// Layers drawn at random over a spec, and the shape matrix the tests run: shared by the test
// suites and tools/bench_cpu.cpp, which times the CPU path on the same layers (no GoogleTest here).
#pragma once

#include "fused_layer.h"

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <string>
#include <vector>

namespace fused3d::test {

struct LayerSpec {
  int64_t batch, cin, cout, groups;  // cin: input channels (all conv groups); groups: GroupNorm's
  std::array<int64_t, 3> kernel, spatial;
  bool bias, affine;
  std::array<int64_t, 3> stride{1, 1, 1}, padding{0, 0, 0}, dilation{1, 1, 1};
  int64_t conv_groups = 1;
};

inline std::string to_string(const LayerSpec& s) {
  std::string text = "B" + std::to_string(s.batch) + " Cin" + std::to_string(s.cin) + " Cout" + std::to_string(s.cout) +
                     " G" + std::to_string(s.groups) + " k" + triple_string(s.kernel) + " in" + triple_string(s.spatial) +
                     (s.bias ? "" : " nobias") + (s.affine ? "" : " noaffine");
  if (s.stride != std::array<int64_t, 3>{1, 1, 1}) text += " stride" + triple_string(s.stride);
  if (s.padding != std::array<int64_t, 3>{0, 0, 0}) text += " pad" + triple_string(s.padding);
  if (s.dilation != std::array<int64_t, 3>{1, 1, 1}) text += " dil" + triple_string(s.dilation);
  if (s.conv_groups != 1) text += " conv_groups" + std::to_string(s.conv_groups);
  return text;
}

// A layer with weights at PyTorch's init scale and, when affine, gamma and beta away from 1 and 0
// so that the affine terms are exercised.
inline FusedLayer random_layer(const LayerSpec& s, at::Generator& gen) {
  FusedLayer l;
  const int64_t cin = s.cin / s.conv_groups;
  const double bound = 1.0 / std::sqrt(double(cin * s.kernel[0] * s.kernel[1] * s.kernel[2]));
  l.weight = at::empty({s.cout, cin, s.kernel[0], s.kernel[1], s.kernel[2]}).uniform_(-bound, bound, gen);
  if (s.bias) l.bias = at::empty({s.cout}).uniform_(-bound, bound, gen);
  if (s.affine) {
    l.gamma = at::empty({s.cout}).uniform_(0.5, 1.5, gen);
    l.beta = at::empty({s.cout}).uniform_(-0.5, 0.5, gen);
  }
  l.norm_groups = s.groups;
  l.eps = 1e-5;
  l.stride = s.stride;
  l.padding = s.padding;
  l.dilation = s.dilation;
  l.conv_groups = s.conv_groups;
  return l;
}

inline at::Tensor random_input(const LayerSpec& s, at::Generator& gen) {
  return at::rand({s.batch, s.cin, s.spatial[0], s.spatial[1], s.spatial[2]}, gen);
}

// Shapes that cover: the standard layer, Cout over one 16-channel tile and not a multiple of it,
// one group per channel and one group for all, odd widths (partial 4-column strips), kernels of
// size 1 and non-cubic ones, Cin = 1, no bias, no affine; then stride, zero padding (more than the
// kernel reaches into it, too), dilation and conv groups (depthwise, and groups of 20 channels that
// span two 16-channel tiles), alone and together.
inline std::vector<LayerSpec> shape_matrix() {
  using T = std::array<int64_t, 3>;
  return {
      {2, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true},
      {3, 1, 8, 2, {3, 3, 3}, {5, 7, 9}, true, true},
      {2, 4, 40, 5, {2, 3, 4}, {6, 9, 13}, true, true},
      {1, 2, 6, 6, {1, 1, 1}, {3, 4, 5}, false, true},
      {2, 5, 12, 1, {3, 1, 2}, {4, 6, 7}, true, false},
      {5, 3, 32, 8, {5, 5, 5}, {7, 8, 11}, false, false},
      {1, 7, 17, 17, {2, 2, 6}, {3, 3, 6}, true, true},
      {2, 3, 16, 4, {4, 4, 4}, {16, 32, 32}, true, true, T{2, 2, 2}},
      {2, 3, 16, 4, {4, 4, 4}, {9, 12, 13}, true, true, T{1, 1, 1}, T{1, 2, 3}},
      {2, 2, 8, 2, {3, 3, 3}, {9, 11, 13}, true, true, T{1, 1, 1}, T{0, 0, 0}, T{2, 3, 1}},
      {2, 6, 12, 3, {3, 2, 3}, {6, 7, 9}, false, true, T{1, 1, 1}, T{0, 0, 0}, T{1, 1, 1}, 3},
      {2, 8, 8, 4, {3, 3, 3}, {5, 6, 7}, true, false, T{1, 1, 1}, T{1, 1, 1}, T{1, 1, 1}, 8},
      {2, 4, 40, 4, {3, 3, 3}, {5, 6, 9}, true, true, T{1, 1, 1}, T{0, 0, 0}, T{1, 1, 1}, 2},
      {2, 2, 2, 1, {1, 1, 1}, {2, 3, 4}, true, true, T{1, 1, 1}, T{2, 3, 4}},
      {3, 4, 10, 5, {3, 2, 4}, {8, 9, 15}, true, true, T{2, 1, 3}, T{1, 0, 2}, T{2, 2, 1}, 2},
  };
}

}  // namespace fused3d::test
