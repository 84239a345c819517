// The fused algorithm on the CPU: the convolution one output row at a time in float32, hardswish
// in place, moments of the row merged into one Moments per (sample, output depth slice, channel),
// then the same epilogue as the CUDA path (moments.h). The full convolution output never exists;
// only one row per thread does. Parallel over (sample, depth slice); every merge runs in a fixed
// order, so the result does not depend on the thread count. Every conv setting (stride, zero
// padding, dilation, groups); float16 and bfloat16 inputs are read as float32 and the result is
// rounded to their dtype at the end.
#include "fused3d/pipeline.h"

#include "moments.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fused3d {

namespace {

// Input index range [first, last] of output columns i whose tap at iw = i*stride + offset lands
// inside [0, width): the rest read zero padding.
struct ColumnRange {
  int64_t first, last;
};

ColumnRange columns_inside(int64_t offset, int64_t stride, int64_t width, int64_t outputs) {
  const auto ceil_div = [](int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); };
  const auto floor_div = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  return {std::max<int64_t>(0, ceil_div(-offset, stride)), std::min(outputs - 1, floor_div(width - 1 - offset, stride))};
}

// Moments of every (sample, output depth slice, channel) into moments[(n * OD + z) * Cout + co].
template <typename T>
void conv_hardswish_moments_cpu(const T* xp, const float* wp, const float* bp, const FusedLayer& l,
                                at::IntArrayRef in, const std::array<int64_t, 3>& out_size, Moments<float>* moments) {
  const int64_t batch = in[0], cin_total = in[1], d = in[2], h = in[3], wd = in[4];
  const auto [od, oh, ow] = out_size;
  const auto k = l.kernel();
  const auto& st = l.stride;
  const auto& pad = l.padding;
  const auto& dil = l.dilation;
  const int64_t cout = l.out_channels(), cin = l.in_channels(), per_group = cout / l.conv_groups;
  at::parallel_for(0, batch * od, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(ow);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / od, z = item % od;
      for (int64_t co = 0; co < cout; ++co) {
        const T* xs = xp + (n * cin_total + (co / per_group) * cin) * d * h * wd;
        Moments<float> slice{0.f, 0.f, 0.f};
        for (int64_t y = 0; y < oh; ++y) {
          std::fill(row.begin(), row.end(), bp[co]);
          const float* wc = wp + co * cin * k[0] * k[1] * k[2];
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t kd = 0; kd < k[0]; ++kd) {
              const int64_t id = z * st[0] - pad[0] + kd * dil[0];
              for (int64_t kh = 0; kh < k[1]; ++kh) {
                const int64_t ih = y * st[1] - pad[1] + kh * dil[1];
                if (id < 0 || id >= d || ih < 0 || ih >= h) {  // padding: adds 0
                  wc += k[2];
                  continue;
                }
                const T* x_row = xs + ((ci * d + id) * h + ih) * wd;
                for (int64_t kw = 0; kw < k[2]; ++kw) {
                  const float wv = *wc++;
                  const int64_t offset = kw * dil[2] - pad[2];
                  const ColumnRange r = columns_inside(offset, st[2], wd, ow);
                  for (int64_t i = r.first; i <= r.last; ++i)
                    row[i] += wv * static_cast<float>(x_row[i * st[2] + offset]);
                }
              }
            }
          for (float& v : row) v = hardswish(v);
          slice = merge_moments(slice, moments_of_span(row.data(), static_cast<int>(ow)));
        }
        moments[(n * od + z) * cout + co] = slice;
      }
    }
  });
}

}  // namespace

void fused_forward_cpu_out(const at::Tensor& input, const FusedLayer& layer, at::Tensor& out) {
  const std::string why = forward_reason(input, layer, at::Device(at::kCPU));
  TORCH_CHECK(why.empty(), "fused3d: ", why);

  const at::Tensor x = input.contiguous();
  const at::Tensor w = as_float32(layer.weight);
  const at::Tensor bias = layer.bias.defined() ? as_float32(layer.bias) : at::zeros({layer.out_channels()});
  const at::Tensor gamma = as_float32(layer.gamma), beta = as_float32(layer.beta);
  const int64_t batch = x.size(0), cout = layer.out_channels();
  const auto out_size = conv_output_spatial(x, layer);
  const int64_t od = out_size[0];

  const std::string out_why = out_mismatch_reason(out, x, layer);
  TORCH_CHECK(out_why.empty(), "fused3d: ", out_why);
  if (batch == 0) return;
  // One tile per output depth slice: partials (B, OD, Cout) of Moments<float>.
  at::Tensor partials = at::empty({batch, od, cout, 3}, at::kFloat);
  auto* moments = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  switch (x.scalar_type()) {
    case at::kFloat: conv_hardswish_moments_cpu(x.data_ptr<float>(), wp, bp, layer, x.sizes(), out_size, moments); break;
    case at::kHalf: conv_hardswish_moments_cpu(x.data_ptr<at::Half>(), wp, bp, layer, x.sizes(), out_size, moments); break;
    case at::kBFloat16: conv_hardswish_moments_cpu(x.data_ptr<at::BFloat16>(), wp, bp, layer, x.sizes(), out_size, moments); break;
    default: TORCH_CHECK(false, "fused3d: no CPU path for dtype ", dtype_name(x.scalar_type()));
  }

  // The epilogue computes in double and writes float32; a float16 / bfloat16 result is rounded once.
  at::Tensor out32 = out.scalar_type() == at::kFloat ? out : at::empty({batch, cout}, at::kFloat);
  EpilogueParams p{};
  p.partials = moments;
  p.gamma = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  p.beta = beta.defined() ? beta.data_ptr<float>() : nullptr;
  p.out = out32.data_ptr<float>();
  p.batch = batch;
  p.tiles = static_cast<int>(od);
  p.channels = static_cast<int>(cout);
  p.groups = static_cast<int>(layer.norm_groups);
  p.eps = layer.eps;
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int g = 0; g < p.groups; ++g) groupnorm_mean_epilogue(p, n, g, 0, 1, [](double v) { return v; });
  });
  if (!out32.is_same(out)) out.copy_(out32);
}

}  // namespace fused3d
