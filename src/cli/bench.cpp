// --bench: fused vs libtorch native, same inputs, same device, same run.
#include "fused3d/bench.h"

#include "fused3d/pipeline.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace fused3d {
namespace {

constexpr int kWarmupRuns = 5;
// Inputs smaller than this are cloned and rotated so that timed runs read DRAM, not a warm L2
// (50 MB on the H100): 4x the L2 leaves no input resident.
constexpr int64_t kRotationBytes = int64_t(200) << 20;
constexpr int kMaxRotation = 64;

Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.runs = static_cast<int>(ms.size());
  t.min_ms = ms.front();
  t.max_ms = ms.back();
  const size_t mid = ms.size() / 2;
  t.median_ms = ms.size() % 2 ? ms[mid] : 0.5 * (ms[mid - 1] + ms[mid]);
  return t;
}

void print_row(std::ostream& out, const char* name, const Timing& t) {
  char line[160];
  std::snprintf(line, sizeof line, "  %-8s %10.4f %10.4f %10.4f\n", name, t.median_ms, t.min_ms, t.max_ms);
  out << line;
}

}  // namespace

Timing time_runs(const std::function<void(int)>& fn, int runs, int warmup, at::Device device) {
  TORCH_CHECK(runs > 0, "fused3d: need at least one timed run");
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<double> ms(runs);
  if (device.is_cuda()) {
    // CUDAEvent creates its event at the first record: record every one once here, so that no
    // cudaEventCreate (about a microsecond) falls between a start and its stop.
    std::vector<at::cuda::CUDAEvent> start, stop;  // with timing (the default constructor has none)
    start.reserve(runs);
    stop.reserve(runs);
    at::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream();
    for (int i = 0; i < runs; ++i) {
      start.emplace_back(cudaEventDefault).record(stream);
      stop.emplace_back(cudaEventDefault).record(stream);
    }
    stream.synchronize();
    for (int i = 0; i < runs; ++i) {
      start[i].record(stream);
      fn(i);
      stop[i].record(stream);
    }
    stream.synchronize();
    for (int i = 0; i < runs; ++i) ms[i] = start[i].elapsed_time(stop[i]);
  } else {
    for (int i = 0; i < runs; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn(i);
      ms[i] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
  }
  return summarize(std::move(ms));
}

// The two ceilings the floors are computed from, measured on this GPU now: a read-only pass
// (sum over 1 GiB) and a TF32 GEMM (8192^3 through cuBLAS).
struct Ceilings {
  double read_bytes_per_s = 0, tf32_flops_per_s = 0;
};

Ceilings measure_ceilings(at::Device device) {
  constexpr int64_t kReadFloats = int64_t(1) << 28;  // 1 GiB
  constexpr int64_t kGemm = 8192;
  const auto options = at::TensorOptions().device(device);
  Ceilings c;
  {
    const at::Tensor big = at::rand({kReadFloats}, options);
    const Timing t = time_runs([&](int) { at::sum(big); }, 20, 3, device);
    c.read_bytes_per_s = kReadFloats * 4.0 / (t.median_ms * 1e-3);
  }
  const bool saved = at::globalContext().allowTF32CuBLAS();
  at::globalContext().setAllowTF32CuBLAS(true);
  const at::Tensor a = at::randn({kGemm, kGemm}, options), b = at::randn({kGemm, kGemm}, options);
  const Timing t = time_runs([&](int) { at::mm(a, b); }, 10, 3, device);
  at::globalContext().setAllowTF32CuBLAS(saved);
  c.tf32_flops_per_s = 2.0 * kGemm * kGemm * kGemm / (t.median_ms * 1e-3);
  return c;
}

double conv_flops(const at::Tensor& x, const FusedLayer& layer) {
  const auto k = layer.kernel();
  const auto o = conv_output_spatial(x, layer);
  const double positions = double(o[0]) * o[1] * o[2];
  return 2.0 * x.size(0) * layer.out_channels() * positions * layer.in_channels() * k[0] * k[1] * k[2];
}

void run_benchmark(const FusedLayer& layer, const at::Tensor& x, Precision precision, int runs, std::ostream& out) {
  const int64_t bytes = x.numel() * x.element_size();
  const int copies = x.is_cuda() && bytes > 0
                         ? static_cast<int>(std::clamp<int64_t>(kRotationBytes / bytes, 1, kMaxRotation))
                         : 1;
  std::vector<at::Tensor> inputs{x};
  for (int i = 1; i < copies; ++i) inputs.push_back(x.clone());

  // Peak device memory each path allocates beyond what exists already (inputs, weights).
  const auto peak_mb = [&](const std::function<void()>& fn) {
    if (!x.is_cuda()) return -1.0;
    const auto device = x.device().index();
    at::cuda::getCurrentCUDAStream().synchronize();
    const int64_t before = c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocated_bytes[0].current;
    c10::cuda::CUDACachingAllocator::resetPeakStats(device);
    fn();
    at::cuda::getCurrentCUDAStream().synchronize();
    return (c10::cuda::CUDACachingAllocator::getDeviceStats(device).allocated_bytes[0].peak - before) / 1e6;
  };
  const double fused_mb = peak_mb([&] { fused_forward(x, layer, precision); });
  const double native_mb = peak_mb([&] { native_forward(x, layer); });

  const Timing fused = time_runs([&](int i) { fused_forward(inputs[i % copies], layer, precision); }, runs,
                                 kWarmupRuns, x.device());
  const Timing native = time_runs([&](int i) { native_forward(inputs[i % copies], layer); }, runs,
                                  kWarmupRuns, x.device());

  // Host time per fused call (checks, allocations, launches), measured without waiting for the GPU:
  // when it exceeds the GPU time (small batches), it is what the events above measure. On the CPU
  // the call is the computation: nothing to add.
  double host_us = 0;
  if (x.is_cuda()) {
    constexpr int kCalls = 20;
    at::cuda::getCurrentCUDAStream().synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) fused_forward(inputs[i % copies], layer, precision);
    host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kCalls;
    at::cuda::getCurrentCUDAStream().synchronize();
  }

  const double flops = conv_flops(x, layer);
  char line[256];
  out << "bench: fused kernel " << fused_kernel_name(x, layer, precision) << "\n";
  out << "bench: " << runs << " timed runs after " << kWarmupRuns << " warm-up, "
      << (x.is_cuda() ? "CUDA events" : "steady clock") << ", " << copies << " rotating input cop"
      << (copies == 1 ? "y" : "ies") << "\n";
  out << "  path     median(ms)    min(ms)    max(ms)\n";
  print_row(out, "fused", fused);
  print_row(out, "native", native);
  if (x.is_cuda()) {
    std::snprintf(line, sizeof line,
                  "  host     %.1f us per fused call (checks, allocations, launches; not waiting for the GPU)\n", host_us);
    out << line;
    std::snprintf(line, sizeof line, "  memory   peak device memory beyond inputs and weights: fused %.2f MB, native %.1f MB\n",
                  fused_mb, native_mb);
    out << line;
  }
  // TFLOP/s where the GPU's rates are in hundreds of them, GFLOP/s on the CPU.
  const double rate_unit = x.is_cuda() ? 1e12 : 1e9;
  std::snprintf(line, sizeof line,
                "  speedup  %.2fx (native median / fused median)\n"
                "  fused    %.2f %s (conv %.1f GFLOP), %.1f GB/s (input %.1f MB read once)\n",
                native.median_ms / fused.median_ms, flops / (fused.median_ms * 1e-3) / rate_unit,
                x.is_cuda() ? "TFLOP/s" : "GFLOP/s", flops / 1e9, bytes / (fused.median_ms * 1e-3) / 1e9, bytes / 1e6);
  out << line;
  if (!x.is_cuda()) return;
  const Ceilings c = measure_ceilings(x.device());
  const double read_floor_ms = bytes / c.read_bytes_per_s * 1e3;
  const double tf32_floor_ms = flops / c.tf32_flops_per_s * 1e3;
  std::snprintf(line, sizeof line,
                "  floors   input read once %.4f ms (%.2f TB/s measured), conv at TF32 GEMM rate %.4f ms "
                "(%.0f TFLOP/s measured)\n"
                "  fused    at %.2fx the read floor, %.2fx the TF32 floor; %.0f%% of the TF32 rate\n",
                read_floor_ms, c.read_bytes_per_s / 1e12, tf32_floor_ms, c.tf32_flops_per_s / 1e12,
                fused.median_ms / read_floor_ms, fused.median_ms / tf32_floor_ms,
                100.0 * tf32_floor_ms / fused.median_ms);
  out << line;
}

}  // namespace fused3d
