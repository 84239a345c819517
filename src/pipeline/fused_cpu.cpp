// The fused algorithm on the CPU: the convolution one output row at a time in float32, hardswish
// in place, moments of the row merged into one Moments per (sample, output depth slice, channel),
// then the same epilogue as the CUDA path (moments.h). The full convolution output never exists;
// only one row per thread does. Parallel over (sample, depth slice); every merge runs in a fixed
// order, so the result does not depend on the thread count.
#include "fused3d/pipeline.h"

#include "moments.h"

#include <ATen/Parallel.h>

#include <vector>

namespace fused3d {

void fused_forward_cpu_out(const at::Tensor& input, const FusedLayer& layer, at::Tensor& out) {
  const std::string malformed = malformed_reason(layer);
  TORCH_CHECK(malformed.empty(), "fused3d: ", malformed);
  const std::string unsupported = unsupported_reason(layer);
  TORCH_CHECK(unsupported.empty(), "fused3d: ", unsupported);
  const std::string mismatch = input_mismatch_reason(input, layer);
  TORCH_CHECK(mismatch.empty(), "fused3d: ", mismatch);
  TORCH_CHECK(input.is_cpu() && layer.weight.is_cpu(), "fused3d: CPU path needs CPU tensors, got ",
              input.device(), " and ", layer.weight.device());

  const at::Tensor x = input.contiguous();
  const at::Tensor w = layer.weight.contiguous();
  const at::Tensor bias = layer.bias.defined() ? layer.bias.contiguous() : at::zeros({layer.out_channels()});
  const at::Tensor gamma = layer.gamma.defined() ? layer.gamma.contiguous() : at::Tensor();
  const at::Tensor beta = layer.beta.defined() ? layer.beta.contiguous() : at::Tensor();
  const int64_t batch = x.size(0), cin = x.size(1), d = x.size(2), h = x.size(3), wd = x.size(4);
  const auto k = layer.kernel();
  const int64_t od = d - k[0] + 1, oh = h - k[1] + 1, ow = wd - k[2] + 1;
  const int64_t cout = layer.out_channels();

  TORCH_CHECK(out.is_cpu() && out.is_contiguous() && out.scalar_type() == at::kFloat &&
                  out.sizes() == at::IntArrayRef({batch, cout}),
              "fused3d: out must be a contiguous float32 (", batch, ", ", cout, ") CPU tensor, got ",
              shape_string(out.sizes()));
  if (batch == 0) return;
  // One tile per output depth slice: partials (B, OD, Cout) of Moments<float>.
  at::Tensor partials = at::empty({batch, od, cout, 3}, x.options());
  auto* moments = reinterpret_cast<Moments<float>*>(partials.data_ptr<float>());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();

  at::parallel_for(0, batch * od, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(ow);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / od, z = item % od;
      const float* xs = xp + n * cin * d * h * wd;
      for (int64_t co = 0; co < cout; ++co) {
        Moments<float> slice{0.f, 0.f, 0.f};
        for (int64_t y = 0; y < oh; ++y) {
          std::fill(row.begin(), row.end(), bp[co]);
          const float* wc = wp + co * cin * k[0] * k[1] * k[2];
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t kd = 0; kd < k[0]; ++kd)
              for (int64_t kh = 0; kh < k[1]; ++kh) {
                const float* x_row = xs + ((ci * d + z + kd) * h + y + kh) * wd;
                for (int64_t kw = 0; kw < k[2]; ++kw) {
                  const float wv = *wc++;
                  for (int64_t i = 0; i < ow; ++i) row[i] += wv * x_row[i + kw];
                }
              }
          for (float& v : row) v = hardswish(v);
          slice = merge_moments(slice, moments_of_span(row.data(), static_cast<int>(ow)));
        }
        moments[(n * od + z) * cout + co] = slice;
      }
    }
  });

  EpilogueParams p{};
  p.partials = moments;
  p.gamma = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  p.beta = beta.defined() ? beta.data_ptr<float>() : nullptr;
  p.out = out.data_ptr<float>();
  p.batch = batch;
  p.tiles = static_cast<int>(od);
  p.channels = static_cast<int>(cout);
  p.groups = static_cast<int>(layer.norm_groups);
  p.eps = layer.eps;
  at::parallel_for(0, batch, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int c = 0; c < p.channels; ++c) groupnorm_mean_epilogue(p, n, c);
  });
}

}  // namespace fused3d
