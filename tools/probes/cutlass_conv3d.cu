// Probe: what does the 3-D convolution alone cost through CUTLASS's Hopper implicit GEMM?
//
// The project's kernel fuses Conv3d -> HardSwish -> GroupNorm -> spatial mean. The obvious
// alternative is "a CUTLASS conv, then a fused epilogue / reduction". This probe times the first
// half of that alternative on the same kind of layers: CUTLASS 3.x's sm90 conv fprop (TMA im2col
// loads of the activation, TMA tiled loads of the filter, warp-specialized producer/consumer,
// GMMA with TF32 operands and float accumulation), writing the full NZPQK float output with a
// plain D = acc epilogue (no source tensor C is read). Whatever a CUTLASS-based path adds for the
// HardSwish / GroupNorm / mean comes on top of this, so these numbers are a lower bound for it.
//
// Tensors are channels-last, as CUTLASS 3.x conv requires: activation NDHWC, filter KTRSC,
// output NZPQK, all packed. Inputs are random and pre-rounded to TF32 (10 mantissa bits), so the
// products are exact in float and the sampled check against a double-precision direct
// convolution measures accumulation error only; an indexing or layout mistake shows up as an
// error of order 1, not 1e-3.
//
// Each layer is run with every compiled tile configuration (can_implement decides which apply);
// the table marks the fastest. Timing: CUDA events around each launch, 10 warm-up launches,
// median of 50. L2 is not flushed between launches; layers whose operands fit in L2 (50 MB)
// therefore read them from L2 after the first launch, as a back-to-back inference loop would.
//
// Build and run: bash tools/probes/cutlass_conv3d.sh (headers from .deps/cutlass/include).
#include "cuda_check.h"

#include "cutlass/cutlass.h"
#include "cutlass/kernel_hardware_info.hpp"  // before the conv collectives, which use it undeclared
#include "cutlass/numeric_types.h"
#include "cutlass/version.h"
#include "cute/tensor.hpp"

#include "cutlass/conv/collective/collective_builder.hpp"
#include "cutlass/conv/convnd_problem_shape.hpp"
#include "cutlass/conv/device/conv_universal_adapter.hpp"
#include "cutlass/conv/kernel/conv_universal.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

// A named namespace: with an anonymous one next to `using namespace cute`, nvcc's generated
// kernel stubs cannot tell it from CuTe's own anonymous namespace.
namespace probe {
using namespace cute;

// ------------------------------------------------------------------------------------------------
// Kernel configurations. On sm90, CUTLASS's conv builder accepts only the non-persistent
// KernelImplicitTmaWarpSpecializedSm90 schedule (KernelScheduleAuto resolves to it; the
// cooperative and ping-pong schedules are rejected by a static_assert in conv/dispatch_policy.hpp),
// so the knobs left are the tile, the cluster and the pipeline depth.
//
// The GEMM K mode of fprop is (C, S, R, T) and the tile's K extent covers channels at one filter
// tap, so a tile K larger than C leaves part of every k-block zero-filled by TMA: with C = 16 a
// 32-wide K tile does half useful work. Configurations with K tile matched to the layer's C (and
// N tile matched to its output channels) are therefore compiled alongside the generic one.
// Stages == 0 means "as many as fit in shared memory" (one CTA per SM); a small explicit count
// lets two CTAs share an SM so one's epilogue overlaps the other's mainloop.
template <int TileM, int TileN, int TileK, int ClusterM, int ClusterN, int Stages>
struct ConvConfig {
  using ElementAct = float;  // TF32 MMA: the builder maps float operands to tfloat32_t GMMA
  using ElementFlt = float;
  using ElementOut = float;
  using ElementAcc = float;
  using ElementCompute = float;
  static constexpr int kAlign = 4;  // 16 bytes of float: TMA's minimum alignment

  using TileShape = Shape<Int<TileM>, Int<TileN>, Shape<Int<TileK>>>;
  using ClusterShape = Shape<Int<ClusterM>, Int<ClusterN>, _1>;

  // ElementC = void: no source tensor, so the epilogue only converts and stores D.
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementCompute,
      void, cutlass::layout::TensorNDHWC, kAlign,
      ElementOut, cutlass::layout::TensorNDHWC, kAlign,
      cutlass::epilogue::TmaWarpSpecialized>::CollectiveOp;

  using StageCount = cute::conditional_t<
      Stages == 0,
      cutlass::conv::collective::StageCountAutoCarveout<
          static_cast<int>(sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::conv::collective::StageCount<(Stages > 0 ? Stages : 2)>>;

  using CollectiveMainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop,
      ElementAct, cutlass::layout::TensorNDHWC, kAlign,
      ElementFlt, cutlass::layout::TensorNDHWC, kAlign,
      ElementAcc, TileShape, ClusterShape, StageCount,
      cutlass::conv::collective::KernelScheduleAuto>::CollectiveOp;

  using ProblemShape = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 3>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Conv = cutlass::conv::device::ConvUniversalAdapter<Kernel>;

  static std::string name() {
    char buf[160];
    std::snprintf(buf, sizeof buf, "tile %dx%dx%d cluster %dx%dx1 stages %d", TileM, TileN, TileK, ClusterM,
                  ClusterN, CollectiveMainloop::DispatchPolicy::Stages);
    return buf;
  }
};

// Generic: one of the tiles CUTLASS's own sm90 TF32 conv3d fprop tests cover.
using CfgGeneric = ConvConfig<128, 64, 32, 1, 1, 0>;
// Same tile, shallow pipeline: two CTAs per SM.
using CfgTwoPerSm = ConvConfig<128, 64, 32, 1, 1, 4>;
// K tile matched to C = 16 (layer a), N to K = 64.
using CfgC16 = ConvConfig<128, 64, 16, 1, 1, 0>;
// K tile matched to C = 8 (layer d), N to K = 32.
using CfgC8 = ConvConfig<128, 32, 8, 1, 1, 0>;
// Smallest TF32 GMMA K (8) for C = 4 (layer e), N to K = 16.
using CfgC4 = ConvConfig<128, 16, 8, 1, 1, 0>;

// ------------------------------------------------------------------------------------------------
struct Layer {
  const char* name;
  int n, c, c_real, k;  // c: channels as stored (padded for TMA); c_real: channels that carry data
  int d, h, w;
  int t, r, s;
  int pad, stride;
  __host__ __device__ int z() const { return (d + 2 * pad - t) / stride + 1; }
  __host__ __device__ int p() const { return (h + 2 * pad - r) / stride + 1; }
  __host__ __device__ int q() const { return (w + 2 * pad - s) / stride + 1; }
  int64_t act_elems() const { return int64_t(n) * d * h * w * c; }
  int64_t flt_elems() const { return int64_t(k) * t * r * s * c; }
  int64_t out_rows() const { return int64_t(n) * z() * p() * q(); }
  int64_t out_elems() const { return out_rows() * k; }
  double flops(int channels) const { return 2.0 * double(out_rows()) * k * channels * t * r * s; }
};

// TF32 keeps 10 of float's 23 mantissa bits; round to nearest so the values are exact in TF32.
__device__ __forceinline__ float round_to_tf32(float x) {
  uint32_t u = __float_as_uint(x);
  u = (u + 0x1000u) & 0xFFFFE000u;
  return __uint_as_float(u);
}

__device__ __forceinline__ uint32_t hash_u32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return uint32_t(x);
}

// Uniform in [-1, 1), TF32-exact; channels at or past c_real (the TMA padding) are zero.
__global__ void fill_kernel(float* x, int64_t count, int c, int c_real, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    const int ch = int(i % c);
    float v = 0.f;
    if (ch < c_real) v = round_to_tf32(float(hash_u32(i * 0x9E3779B97F4A7C15ULL + seed) >> 8) * (2.0f / 16777216.0f) - 1.0f);
    x[i] = v;
  }
}

// Direct convolution in double at the sampled output positions (index into packed NZPQK).
// Also returns sum |a*b| over the receptive field, the scale that accumulation error grows with.
__global__ void reference_kernel(const float* act, const float* flt, const float* out, const int64_t* idx, int count,
                                 Layer L, double* ref, double* abs_sum, float* got) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int64_t o = idx[i];
  const int k = int(o % L.k);
  int64_t m = o / L.k;
  const int Q = L.q(), P = L.p(), Z = L.z();
  const int q = int(m % Q);
  m /= Q;
  const int p = int(m % P);
  m /= P;
  const int z = int(m % Z);
  const int n = int(m / Z);
  double acc = 0.0, mag = 0.0;
  for (int t = 0; t < L.t; ++t) {
    const int di = z * L.stride - L.pad + t;
    if (di < 0 || di >= L.d) continue;
    for (int r = 0; r < L.r; ++r) {
      const int hi = p * L.stride - L.pad + r;
      if (hi < 0 || hi >= L.h) continue;
      for (int s = 0; s < L.s; ++s) {
        const int wi = q * L.stride - L.pad + s;
        if (wi < 0 || wi >= L.w) continue;
        const float* a = act + (((int64_t(n) * L.d + di) * L.h + hi) * L.w + wi) * L.c;
        const float* b = flt + (((int64_t(k) * L.t + t) * L.r + r) * L.s + s) * L.c;
        for (int c = 0; c < L.c; ++c) {
          const double prod = double(a[c]) * double(b[c]);
          acc += prod;
          mag += fabs(prod);
        }
      }
    }
  }
  ref[i] = acc;
  abs_sum[i] = mag;
  got[i] = out[o];
}

struct Buffers {
  float* act = nullptr;
  float* flt = nullptr;
  float* out = nullptr;
  int64_t* idx = nullptr;
  double* ref = nullptr;
  double* abs_sum = nullptr;
  float* got = nullptr;
  int samples = 0;
};

struct Result {
  bool ran = false;
  std::string why;  // when not run
  double ms = 0, max_rel = 0, max_err_over_abs = 0;
};

constexpr int kSamples = 2000;
constexpr int kWarmup = 10;
constexpr int kTimed = 50;
// With TF32-exact inputs the products are exact; what is left is float accumulation over at most
// C*T*R*S = 864 terms. An indexing error gives O(1e-1) or larger.
constexpr double kTolerance = 1e-4;

// Host-side arguments for one layer; no CUDA call, so can_implement can be asked without a GPU.
template <class Cfg>
typename Cfg::Conv::Arguments make_args(const Layer& L, const float* act, const float* flt, float* out) {
  using Conv = typename Cfg::Conv;
  using ProblemShape = typename Cfg::ProblemShape;
  ProblemShape problem(cutlass::conv::Mode::kCrossCorrelation,
                       {L.n, L.d, L.h, L.w, L.c},       // activation NDHWC
                       {L.k, L.t, L.r, L.s, L.c},       // filter KTRSC
                       {L.pad, L.pad, L.pad},           // lower padding (d, h, w)
                       {L.pad, L.pad, L.pad},           // upper padding
                       {L.stride, L.stride, L.stride},  // traversal stride
                       {1, 1, 1},                       // dilation
                       1);                              // groups

  typename Conv::Arguments args{};
  args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
  args.problem_shape = problem;
  args.mainloop.ptr_A = act;
  args.mainloop.ptr_B = flt;
  // Output strides: the epilogue's M mode is (Q, P, Z, N); fill them from the packed NZPQK strides.
  using StrideD = typename Conv::ConvKernel::StrideD;
  StrideD dD{};
  cute::for_each(cute::make_seq<cute::rank<0>(StrideD{})>{}, [&](auto i) {
    cute::get<0, i>(dD) = problem.stride_C[ProblemShape::RankT - 2 - i];
  });
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = 0.0f;
  args.epilogue.ptr_C = nullptr;
  args.epilogue.dC = dD;
  args.epilogue.ptr_D = out;
  args.epilogue.dD = dD;
  return args;
}

template <class Cfg>
Result run_config(const Layer& L, Buffers& B, cudaStream_t stream) {
  using Conv = typename Cfg::Conv;
  Result res;
  typename Conv::Arguments args = make_args<Cfg>(L, B.act, B.flt, B.out);
  CHECK(cudaGetDevice(&args.hw_info.device_id));
  args.hw_info.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(args.hw_info.device_id);

  cutlass::Status st = Conv::can_implement(args);
  if (st != cutlass::Status::kSuccess) {
    res.why = std::string("can_implement: ") + cutlassGetStatusString(st);
    return res;
  }
  const size_t ws_bytes = Conv::get_workspace_size(args);
  void* workspace = nullptr;
  if (ws_bytes) CHECK(cudaMalloc(&workspace, ws_bytes));
  Conv conv;
  st = conv.initialize(args, workspace, stream);
  if (st != cutlass::Status::kSuccess) {
    res.why = std::string("initialize: ") + cutlassGetStatusString(st) + " (" + cudaGetErrorString(cudaGetLastError()) + ")";
    if (workspace) CHECK(cudaFree(workspace));
    return res;
  }

  // Poison the output (all-ones bits = NaN) so a previous configuration's result cannot pass.
  CHECK(cudaMemsetAsync(B.out, 0xFF, sizeof(float) * L.out_elems(), stream));
  st = conv.run(stream);
  if (st != cutlass::Status::kSuccess) {
    res.why = std::string("run: ") + cutlassGetStatusString(st) + " (" + cudaGetErrorString(cudaGetLastError()) + ")";
    if (workspace) CHECK(cudaFree(workspace));
    return res;
  }
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaGetLastError());

  reference_kernel<<<(B.samples + 127) / 128, 128, 0, stream>>>(B.act, B.flt, B.out, B.idx, B.samples, L, B.ref,
                                                                B.abs_sum, B.got);
  CHECK(cudaGetLastError());
  std::vector<double> ref(B.samples), mag(B.samples);
  std::vector<float> got(B.samples);
  CHECK(cudaMemcpyAsync(ref.data(), B.ref, sizeof(double) * B.samples, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaMemcpyAsync(mag.data(), B.abs_sum, sizeof(double) * B.samples, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaMemcpyAsync(got.data(), B.got, sizeof(float) * B.samples, cudaMemcpyDeviceToHost, stream));
  CHECK(cudaStreamSynchronize(stream));
  for (int i = 0; i < B.samples; ++i) {
    const double err = std::fabs(double(got[i]) - ref[i]);
    if (!std::isfinite(got[i])) {
      res.max_rel = res.max_err_over_abs = INFINITY;
      break;
    }
    // Relative error where the result is not a near-total cancellation; error over sum|a*b| everywhere.
    if (std::fabs(ref[i]) >= 1e-3 * mag[i] && ref[i] != 0.0) res.max_rel = std::max(res.max_rel, err / std::fabs(ref[i]));
    if (mag[i] > 0) res.max_err_over_abs = std::max(res.max_err_over_abs, err / mag[i]);
    else res.max_err_over_abs = std::max(res.max_err_over_abs, err);
  }

  for (int i = 0; i < kWarmup; ++i) conv.run(stream);
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaGetLastError());
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<float> times(kTimed);
  for (int i = 0; i < kTimed; ++i) {
    CHECK(cudaEventRecord(e0, stream));
    conv.run(stream);
    CHECK(cudaEventRecord(e1, stream));
    CHECK(cudaEventSynchronize(e1));
    CHECK(cudaEventElapsedTime(&times[i], e0, e1));
  }
  CHECK(cudaGetLastError());
  std::sort(times.begin(), times.end());
  res.ms = 0.5 * (times[kTimed / 2 - 1] + times[kTimed / 2]);
  res.ran = true;
  CHECK(cudaEventDestroy(e0));
  CHECK(cudaEventDestroy(e1));
  if (workspace) CHECK(cudaFree(workspace));
  return res;
}

template <class Cfg>
void report(const Layer& L, Buffers& B, cudaStream_t stream, double& best_ms, std::string& best_name) {
  const Result r = run_config<Cfg>(L, B, stream);
  const std::string name = Cfg::name();
  if (!r.ran) {
    std::printf("  %-40s  rejected: %s\n", name.c_str(), r.why.c_str());
    return;
  }
  const bool ok = r.max_err_over_abs <= kTolerance;
  std::printf("  %-40s  %9.4f ms  %7.2f TFLOP/s (useful %7.2f)  max_rel %.2e  err/sum|ab| %.2e  %s\n",
              name.c_str(), r.ms, L.flops(L.c) / (r.ms * 1e9), L.flops(L.c_real) / (r.ms * 1e9), r.max_rel,
              r.max_err_over_abs, ok ? "ok" : "CHECK FAILED");
  if (ok && r.ms < best_ms) {
    best_ms = r.ms;
    best_name = name;
  }
}

// Without a GPU: the configuration's static facts and can_implement's answer for each layer.
template <class Cfg>
void info(const std::vector<Layer>& layers) {
  using Conv = typename Cfg::Conv;
  std::printf("%s: %d threads, %d bytes shared memory\n", Cfg::name().c_str(), int(Conv::ConvKernel::MaxThreadsPerBlock),
              int(Conv::ConvKernel::SharedStorageSize));
  // Any 16-byte-aligned address will do: can_implement only reads shapes and strides.
  float* fake = reinterpret_cast<float*>(uintptr_t(256));
  for (const Layer& L : layers) {
    const cutlass::Status st = Conv::can_implement(make_args<Cfg>(L, fake, fake, fake));
    std::printf("  layer %s (C %d): can_implement %s\n", L.name, L.c, cutlassGetStatusString(st));
  }
}

}  // namespace probe

using namespace probe;

int main(int argc, char** argv) {
  // Optional argument: a string of layer letters to run, e.g. "ace"; or --info (no GPU needed).
  const bool info_only = argc > 1 && std::strcmp(argv[1], "--info") == 0;
  const char* only = argc > 1 && !info_only ? argv[1] : nullptr;

  // C is the stored channel count. Layer e has 3 real channels padded to 4: TMA needs every
  // global stride but the innermost to be a multiple of 16 bytes, so the NDHWC pixel row
  // (C floats) must be 16-byte aligned, and CUTLASS's can_implement checks exactly that.
  // The padding channel is zero in both activation and filter, so the result equals the C = 3 conv.
  const std::vector<Layer> layers = {
      {"a", 32, 16, 16, 64, 16, 64, 64, 3, 3, 3, 1, 1},
      {"b", 64, 32, 32, 64, 8, 32, 32, 3, 3, 3, 0, 1},
      {"c", 128, 32, 32, 64, 16, 32, 32, 1, 1, 1, 0, 1},
      {"d", 256, 8, 8, 32, 16, 32, 32, 3, 3, 3, 0, 1},
      {"e", 1024, 4, 3, 16, 16, 32, 32, 3, 3, 3, 0, 1},
  };

  // Layer e as it comes, 3 channels: 12-byte pixel rows, which TMA cannot address.
  const Layer unpadded_e = {"e (C 3 unpadded)", 1024, 3, 3, 16, 16, 32, 32, 3, 3, 3, 0, 1};

  if (info_only) {
    std::vector<Layer> all = layers;
    all.push_back(unpadded_e);
    std::printf("CUTLASS %d.%d.%d\n", CUTLASS_MAJOR, CUTLASS_MINOR, CUTLASS_PATCH);
    info<CfgGeneric>(all);
    info<CfgTwoPerSm>(all);
    info<CfgC16>(all);
    info<CfgC8>(all);
    info<CfgC4>(all);
    return 0;
  }

  int dev = 0;
  CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s (sm_%d%d, %d SMs), CUTLASS %d.%d.%d\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, CUTLASS_MAJOR, CUTLASS_MINOR, CUTLASS_PATCH);
  std::printf("CUTLASS sm90 conv3d fprop: float (TF32 GMMA) x float -> float acc, NDHWC / KTRSC / NZPQK, "
              "KernelImplicitTmaWarpSpecializedSm90 + TmaWarpSpecialized epilogue, D = acc\n");
  std::printf("timing: median of %d launches after %d warm-up; check: %d sampled outputs vs double direct conv, "
              "pass if err/sum|a*b| <= %.0e\n\n", kTimed, kWarmup, kSamples, kTolerance);

  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));

  for (const Layer& L : layers) {
    if (only && !std::strchr(only, L.name[0])) continue;
    std::printf("layer %s: N %d C %d%s K %d  %dx%dx%d  k %dx%dx%d pad %d stride %d -> %dx%dx%d  (GEMM M %lld N %d K %d)\n",
                L.name, L.n, L.c, L.c != L.c_real ? " (3 real, padded)" : "", L.k, L.d, L.h, L.w, L.t, L.r, L.s, L.pad,
                L.stride, L.z(), L.p(), L.q(), (long long)L.out_rows(), L.k, L.c * L.t * L.r * L.s);
    Buffers B;
    B.samples = kSamples;
    CHECK(cudaMalloc(&B.act, sizeof(float) * L.act_elems()));
    CHECK(cudaMalloc(&B.flt, sizeof(float) * L.flt_elems()));
    CHECK(cudaMalloc(&B.out, sizeof(float) * L.out_elems()));
    CHECK(cudaMalloc(&B.idx, sizeof(int64_t) * B.samples));
    CHECK(cudaMalloc(&B.ref, sizeof(double) * B.samples));
    CHECK(cudaMalloc(&B.abs_sum, sizeof(double) * B.samples));
    CHECK(cudaMalloc(&B.got, sizeof(float) * B.samples));
    fill_kernel<<<2048, 256, 0, stream>>>(B.act, L.act_elems(), L.c, L.c_real, 0x1234);
    fill_kernel<<<2048, 256, 0, stream>>>(B.flt, L.flt_elems(), L.c, L.c_real, 0x5678);
    CHECK(cudaGetLastError());

    // Samples: the first and last outputs (padding corners) plus uniform random positions.
    std::mt19937_64 rng(42 + L.name[0]);
    std::uniform_int_distribution<int64_t> pick(0, L.out_elems() - 1);
    std::vector<int64_t> idx(B.samples);
    idx[0] = 0;
    idx[1] = L.out_elems() - 1;
    for (int i = 2; i < B.samples; ++i) idx[i] = pick(rng);
    CHECK(cudaMemcpyAsync(B.idx, idx.data(), sizeof(int64_t) * B.samples, cudaMemcpyHostToDevice, stream));
    CHECK(cudaStreamSynchronize(stream));

    double best_ms = INFINITY;
    std::string best_name;
    report<CfgGeneric>(L, B, stream, best_ms, best_name);
    report<CfgTwoPerSm>(L, B, stream, best_ms, best_name);
    report<CfgC16>(L, B, stream, best_ms, best_name);
    report<CfgC8>(L, B, stream, best_ms, best_name);
    report<CfgC4>(L, B, stream, best_ms, best_name);
    if (L.c != L.c_real) {
      const float* fake = reinterpret_cast<const float*>(uintptr_t(256));
      const cutlass::Status st = CfgC4::Conv::can_implement(make_args<CfgC4>(unpadded_e, fake, fake, nullptr));
      std::printf("  (unpadded C = %d: can_implement %s)\n", unpadded_e.c, cutlassGetStatusString(st));
    }
    if (std::isfinite(best_ms))
      std::printf("  best: %.4f ms  %.2f TFLOP/s (useful %.2f)  [%s]\n\n", best_ms, L.flops(L.c) / (best_ms * 1e9),
                  L.flops(L.c_real) / (best_ms * 1e9), best_name.c_str());
    else
      std::printf("  best: none ran and passed the check\n\n");

    CHECK(cudaFree(B.act));
    CHECK(cudaFree(B.flt));
    CHECK(cudaFree(B.out));
    CHECK(cudaFree(B.idx));
    CHECK(cudaFree(B.ref));
    CHECK(cudaFree(B.abs_sum));
    CHECK(cudaFree(B.got));
  }
  CHECK(cudaStreamDestroy(stream));
  return 0;
}
