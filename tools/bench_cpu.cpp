// The CPU path against libtorch's native ops on the CPU, on every layer of the test suite's shape
// matrix at several batch sizes and on the standard layer at the standard batch: medians of timed
// runs after warm-up, fused and native alternating in one process, and each one's relative L2
// error against float64. Prints a markdown table and exits 1 if fused is slower than native on any
// row (beyond the spread of the two medians' runs, measured by timing native twice). Also the two
// tails alone on the same conv output (the convolution is the same libtorch call in both).
//   ./build/fused3d_bench_cpu [runs [layer-substring]]
#include "fused3d/bench.h"
#include "fused3d/model.h"
#include "fused3d/pipeline.h"
#include "layer_specs.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace fused3d;

namespace {

double rel_l2(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b).norm().item<double>() / b.norm().item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::atoi(argv[1]) : 11;
  const std::string only = argc > 2 ? argv[2] : "";
  const at::Device cpu(at::kCPU);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<test::LayerSpec> specs;
  for (const int64_t batch : {1, 8, 64})
    for (test::LayerSpec s : test::shape_matrix()) {
      s.batch = batch;
      specs.push_back(s);
    }
  test::LayerSpec standard = test::shape_matrix().front();
  standard.batch = 256;
  specs.push_back(standard);
  std::printf("CPU, %d threads; medians of %d runs (ms)\n\n", at::get_num_threads(), runs);
  std::printf("| layer | fused | native | native again | speedup | fused tail | native tail | fused err | native err |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  int slower = 0;
  for (const test::LayerSpec& s : specs) {
    if (test::to_string(s).find(only) == std::string::npos) continue;
    const FusedLayer layer = test::random_layer(s, gen);
    const at::Tensor x = test::random_input(s, gen);
    const FusedLayer layer64 = layer_to(layer, cpu, at::kDouble);
    const at::Tensor ref = native_forward(x.to(at::kDouble), layer64);
    const double fused_err = rel_l2(fused_forward(x, layer), ref), native_err = rel_l2(native_forward(x, layer), ref);
    const Timing native = time_runs([&](int) { native_forward(x, layer); }, runs, 2, cpu);
    const Timing fused = time_runs([&](int) { fused_forward(x, layer); }, runs, 2, cpu);
    const Timing again = time_runs([&](int) { native_forward(x, layer); }, runs, 2, cpu);
    // The tails alone on one conv output: both calls run the same convolution, so these decide
    // the rows where it is most of the time.
    const at::Tensor y = at::conv3d(x, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                                    layer.conv_groups).contiguous();
    const Timing fused_tail = time_runs([&](int) { fused_tail_moments_cpu(y); }, runs, 2, cpu);
    const Timing native_tail = time_runs(
        [&](int) { at::group_norm(at::hardswish(y), layer.norm_groups, layer.gamma, layer.beta, layer.eps).mean({2, 3, 4}); },
        runs, 2, cpu);
    const double best_native = std::min(native.median_ms, again.median_ms);
    const double noise = std::abs(native.median_ms - again.median_ms);
    const bool slow = fused.median_ms > best_native + noise;
    slower += slow;
    std::printf("| %s | %.3f | %.3f | %.3f | %.2fx%s | %.3f | %.3f | %.1e | %.1e |\n", test::to_string(s).c_str(),
                fused.median_ms, native.median_ms, again.median_ms, best_native / fused.median_ms, slow ? " SLOWER" : "",
                fused_tail.median_ms, native_tail.median_ms, fused_err, native_err);
    std::fflush(stdout);
  }
  std::printf("\n%d of %zu layers slower than native\n", slower, specs.size());
  return slower ? 1 : 0;
}
