// Timing for --bench: warm-up, then many timed runs; median, min, max.
#pragma once

#include "fused_layer.h"

#include <ATen/ATen.h>

#include <functional>
#include <ostream>

namespace fused3d {

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int runs = 0;
};

// Times fn(run_index): on CUDA with a pair of events around each run on the current stream, on the
// CPU with the steady clock. `warmup` untimed runs come first.
Timing time_runs(const std::function<void(int)>& fn, int runs, int warmup, at::Device device);

// The convolution's FLOPs for input x: 2 x multiply-adds over every output position (stride,
// padding and dilation as the layer has them) and every tap, padding taps included.
double conv_flops(const at::Tensor& x, const FusedLayer& layer);

// Times the fused pipeline and libtorch native on the same data and prints times, speedup,
// achieved TFLOP/s and GB/s, and (on CUDA) the fraction of the two floors measured on this GPU:
// reading the input once, and the convolution's FLOPs at the TF32 GEMM rate.
void run_benchmark(const FusedLayer& layer, const at::Tensor& x, Precision precision, int runs, std::ostream& out);

}  // namespace fused3d
