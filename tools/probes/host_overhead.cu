// Where a B=1 forward spends its time: the host side piece by piece (steady clock over many calls,
// no GPU wait inside a loop) and the GPU side without the host (the same call captured in a CUDA
// graph and replayed). Built on request only: cmake --build build --target fused3d_host_probe.
//   ./build/fused3d_host_probe [batch]
#include "fused3d/model.h"
#include "fused3d/pipeline.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

struct LaunchParams {
  char bytes[160];  // about the size of the tensor-core kernel's parameters
};
__global__ void empty_kernel(LaunchParams) {}

template <class F>
double host_us(F&& f, int calls = 2000) {
  for (int i = 0; i < 100; ++i) f();
  at::cuda::getCurrentCUDAStream().synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) f();
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / calls;
  at::cuda::getCurrentCUDAStream().synchronize();
  return us;
}

// Median over `runs` of the event time around one f(), events created beforehand.
template <class F>
double event_median_us(F&& f, int runs = 200) {
  at::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream();
  std::vector<at::cuda::CUDAEvent> start, stop;
  for (int i = 0; i < runs; ++i) {
    start.emplace_back(cudaEventDefault).record(stream);
    stop.emplace_back(cudaEventDefault).record(stream);
  }
  for (int i = 0; i < 20; ++i) f();
  stream.synchronize();
  for (int i = 0; i < runs; ++i) {
    start[i].record(stream);
    f();
    stop[i].record(stream);
  }
  stream.synchronize();
  std::vector<double> us(runs);
  for (int i = 0; i < runs; ++i) us[i] = 1e3 * start[i].elapsed_time(stop[i]);
  std::sort(us.begin(), us.end());
  return us[runs / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fused3d;
  const int64_t batch = argc > 1 ? std::atoll(argv[1]) : 1;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const Model model = default_model(gen);
  const FusedLayer layer = layer_to(model.layer, at::kCUDA, at::kFloat);
  const at::Tensor x = default_input(model.layer, batch, gen).cuda();
  at::Tensor out = at::empty({batch, layer.out_channels()}, x.options());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  LaunchParams params{};

  std::printf("batch %lld, %s\n", static_cast<long long>(batch), fused_kernel_name(x, layer, Precision::kAccurate).c_str());
  std::printf("host us per call (steady clock, 2000 calls, no waits)\n");
  std::printf("  empty kernel launch, 160-byte params   %7.2f\n",
              host_us([&] { empty_kernel<<<13, 192, 0, stream>>>(params); }));
  std::printf("  at::empty (1, 13, 16, 3) on cuda       %7.2f\n",
              host_us([&] { at::empty({batch, 13, 16, 3}, x.options()); }));
  std::printf("  getCurrentCUDAStream + CUDAGuard       %7.2f\n", host_us([&] {
                const c10::cuda::CUDAGuard guard(x.device());
                (void)at::cuda::getCurrentCUDAStream();
              }));
  std::printf("  layer checks (3 reasons)               %7.2f\n", host_us([&] {
                (void)malformed_reason(layer);
                (void)unsupported_reason(layer);
                (void)input_mismatch_reason(x, layer);
              }));
  for (Precision precision : {Precision::kAccurate, Precision::kTF32}) {
    const char* name = precision == Precision::kAccurate ? "accurate" : "tf32";
    std::printf("  fused_forward_out, %-8s             %7.2f\n", name,
                host_us([&] { fused_forward_out(x, layer, precision, out); }));
    std::printf("  fused_forward (allocates out), %-8s %7.2f\n", name,
                host_us([&] { fused_forward(x, layer, precision); }));
  }

  std::printf("event-timed us per call (median of 200, events created beforehand)\n");
  std::printf("  empty kernel launch                    %7.2f\n",
              event_median_us([&] { empty_kernel<<<13, 192, 0, stream>>>(params); }));
  for (Precision precision : {Precision::kAccurate, Precision::kTF32}) {
    const char* name = precision == Precision::kAccurate ? "accurate" : "tf32";
    std::printf("  fused_forward_out, %-8s             %7.2f\n", name,
                event_median_us([&] { fused_forward_out(x, layer, precision, out); }));
    // The GPU alone: the same call captured once (packed weights already cached) and replayed.
    at::cuda::CUDAGraph graph;
    {
      const at::cuda::CUDAStream capture = at::cuda::getStreamFromPool();
      const c10::cuda::CUDAStreamGuard guard(capture);
      graph.capture_begin();
      fused_forward_out(x, layer, precision, out);
      graph.capture_end();
    }
    std::printf("  same call as a CUDA graph replay       %7.2f\n", event_median_us([&] { graph.replay(); }));
  }
  return 0;
}
