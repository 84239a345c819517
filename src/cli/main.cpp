// fused3d: the command line. Loads a model and an input (or builds the embedded default), runs the
// fused pipeline, and optionally writes the result, checks it against libtorch and times both.
#include "fused3d/bench.h"
#include "fused3d/errors.h"
#include "fused3d/model.h"
#include "fused3d/pipeline.h"
#include "fused3d/tensor_io.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/PinnedMemoryAllocator.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>
#include <iostream>
#include <map>
#include <sstream>

namespace fused3d {
namespace {

// --check tolerance on the relative L2 error against libtorch native (float32, TF32 off, whose own
// error vs float64 is ~1e-7: OPTIMIZATION.md 3.1). Each is what the mode promises against float64:
// accurate (x fp16, weights split hi+lo) measures ~2e-6, float32 paths ~1e-7: bound 1e-5; tf32
// measures up to 8e-4 at inputs in [5, 6) (weight rounding does not average out): bound 1e-3.
// A float16 / bfloat16 model computes in float32 and rounds each output once, to within half an
// ulp: 2^-11 (float16) or 2^-8 (bfloat16) of each value, so of the L2 norm too; that is added.
double check_tolerance(Precision precision, at::ScalarType dtype) {
  const double rounding = dtype == at::kHalf ? std::ldexp(1.0, -11) : dtype == at::kBFloat16 ? std::ldexp(1.0, -8) : 0.0;
  return (precision == Precision::kTF32 ? 1e-3 : 1e-5) + rounding;
}
constexpr int64_t kDefaultBatch = 1024;

struct Options {
  std::string model, input, output, device = "auto";
  Precision precision = Precision::kAccurate;
  bool check = false;
  int bench = 0;
  uint64_t seed = 0;
  int64_t batch = kDefaultBatch;
};

at::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? at::Device("cuda:0") : at::Device(at::kCPU);
  if (name != "cpu" && name.rfind("cuda", 0) != 0)
    throw InputError("--device must be cpu, cuda or cuda:N, got '" + name + "'");
  at::Device device(at::kCPU);
  try {
    device = at::Device(name);
  } catch (const c10::Error&) {
    throw InputError("--device must be cpu, cuda or cuda:N, got '" + name + "'");
  }
  if (device.is_cuda()) {
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (count == 0) throw InputError("--device " + name + ": no CUDA device is available");
    if (!device.has_index()) device.set_index(0);
    if (device.index() >= count)
      throw InputError("--device " + name + ": only " + std::to_string(count) + " CUDA device(s)");
  }
  return device;
}

std::string device_name(const at::Device& device) {
  if (!device.is_cuda()) return device.str();
  return device.str() + " (" + at::cuda::getDeviceProperties(device.index())->name + ")";
}

// The fused output against the reference as torch.testing compares them with equal_nan: NaN and
// Inf must stand where the reference has them (Inf with its sign), and the errors are those of the
// elements both have finite.
struct Comparison {
  double max_abs = 0, rel_l2 = 0;
  bool same_specials = true;
  std::string specials;  // "; NaN or Inf in 3 of 64 outputs, as in native", or what differs
};

Comparison compare(const at::Tensor& out, const at::Tensor& ref) {
  Comparison c;
  const at::Tensor out_nan = at::isnan(out), ref_nan = at::isnan(ref);
  const at::Tensor out_inf = at::isinf(out), ref_inf = at::isinf(ref);
  const bool nan_match = at::equal(out_nan, ref_nan);
  const bool inf_match = at::equal(out_inf, ref_inf) && at::equal(out.masked_select(ref_inf), ref.masked_select(ref_inf));
  c.same_specials = nan_match && inf_match;
  const int64_t special = (ref_nan | ref_inf).sum().item<int64_t>();
  if (!c.same_specials)
    c.specials = "; NaN or Inf where native has " + std::string(nan_match ? "other Inf" : "no NaN or other NaN");
  else if (special > 0)
    c.specials = "; NaN or Inf in " + std::to_string(special) + " of " + std::to_string(ref.numel()) +
                 " outputs, as in native";
  const at::Tensor finite = at::isfinite(out) & at::isfinite(ref);
  const at::Tensor a = out.masked_select(finite), b = ref.masked_select(finite);
  if (a.numel() == 0) return c;
  const at::Tensor diff = a - b;
  c.max_abs = diff.abs().max().item<double>();
  const double ref_norm = b.norm().item<double>();
  c.rel_l2 = ref_norm > 0 ? diff.norm().item<double>() / ref_norm : diff.norm().item<double>();
  return c;
}

std::string first_values(const at::Tensor& out) {
  std::ostringstream s;
  s << "out[0, :" << std::min<int64_t>(4, out.size(1)) << "] = [";
  const at::Tensor row = out.size(0) ? out[0].slice(0, 0, 4).cpu() : at::Tensor();
  for (int64_t i = 0; row.defined() && i < row.numel(); ++i) {
    char v[32];
    std::snprintf(v, sizeof v, "%s%.6g", i ? ", " : "", row[i].item<double>());
    s << v;
  }
  s << "]";
  return s.str();
}

// CLI11 validators whose messages say what is wrong in plain words (its own print the ranges of
// the number types and the internals of their mappings).
CLI::Validator whole_number(int64_t least, int64_t most) {
  return CLI::Validator(
      [least, most](std::string& text) -> std::string {
        size_t used = 0;
        long long value = 0;
        try {
          value = std::stoll(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return "must be a whole number, got '" + text + "'";
        if (value < least || value > most)
          return "must be from " + std::to_string(least) + " to " + std::to_string(most) + ", got " + text;
        return "";
      },
      "");
}

CLI::Validator one_of(std::vector<std::string> choices) {
  return CLI::Validator(
      [choices](std::string& text) -> std::string {
        for (const std::string& c : choices)
          if (text == c) return "";
        std::string list;
        for (const std::string& c : choices) list += (list.empty() ? "" : " or ") + c;
        return "must be " + list + ", got '" + text + "'";
      },
      "");
}

// Returns the process exit code.
int run(const Options& o) {
  const at::Device device = resolve_device(o.device);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const Model model = o.model.empty() ? default_model(generator) : load_model(o.model);
  if (const std::string why = unsupported_reason(model.layer); !why.empty())
    throw InputError("model '" + model.source + "': " + why);

  at::Tensor x;
  std::string input_source;
  if (o.input.empty()) {
    x = default_input(model.layer, o.batch, generator);
    input_source = "torch.rand, seed " + std::to_string(o.seed);
  } else {
    // For a GPU run the storage is read straight into pinned memory, from which the copy to the
    // device runs at the full rate and asynchronously.
    x = load_tensor(o.input, device.is_cuda() ? at::cuda::getPinnedMemoryAllocator() : nullptr);
    input_source = o.input;
  }
  if (const std::string why = input_mismatch_reason(x, model.layer); !why.empty())
    throw InputError("input '" + input_source + "': " + why);

  const FusedLayer layer = layer_to(model.layer, device, model.layer.weight.scalar_type());
  x = x.to(device, /*non_blocking=*/true);
  std::cout << "fused3d: model   " << model.source << ": " << describe(layer) << "\n"
            << "fused3d: input   " << shape_string(x.sizes()) << " " << dtype_name(x.scalar_type()) << " ("
            << input_source << ")\n"
            << "fused3d: device  " << device_name(device) << "\n"
            << "fused3d: kernel  " << fused_kernel_name(x, layer, o.precision) << "\n";

  // NaN-poisoned, so an element the kernels fail to write shows in --check.
  at::Tensor out = at::full({x.size(0), layer.out_channels()}, NAN, x.options());
  fused_forward_out(x, layer, o.precision, out);
  std::cout << "fused3d: output  " << shape_string(out.sizes()) << " " << dtype_name(out.scalar_type()) << ", "
            << first_values(out) << std::endl;
  if (!o.output.empty()) {
    save_tensor(o.output, out);
    std::cout << "fused3d: wrote   " << o.output << "\n";
  }

  int status = 0;
  if (o.check) {
    // float16 / bfloat16: the reference is libtorch in float32 on the same values (its float16
    // pipeline rounds every intermediate tensor and is itself less accurate than the fused one).
    const bool reduced = x.scalar_type() != at::kFloat;
    const at::Tensor ref = (reduced ? native_forward(x.to(at::kFloat), layer_to(layer, device, at::kFloat))
                                    : native_forward(x, layer))
                               .to(at::kDouble);
    const Comparison c = compare(out.to(at::kDouble), ref);
    const double tolerance = check_tolerance(o.precision, x.scalar_type());
    const bool pass = c.same_specials && c.rel_l2 <= tolerance;
    char line[320];
    std::snprintf(line, sizeof line,
                  "check: vs libtorch native%s on %s: max abs error %.3g, relative L2 error %.3g "
                  "(tolerance %.2g)%s: %s\n",
                  reduced ? " (float32 on the same values)" : "", device.str().c_str(), c.max_abs, c.rel_l2,
                  tolerance, c.specials.c_str(), pass ? "PASS" : "FAIL");
    std::cout << line;
    if (!pass) status = kExitCheckFailed;
  }
  if (o.bench > 0) run_benchmark(layer, x, o.precision, o.bench, std::cout);
  return status;
}

}  // namespace
}  // namespace fused3d

int main(int argc, char** argv) {
  using namespace fused3d;
  Options o;
  CLI::App app{
      "fused3d: Conv3d -> HardSwish -> GroupNorm -> spatial mean through fused CUDA kernels.\n"
      "With no --model/--input it runs the standard configuration: B=1024, Cin=3, Cout=16,\n"
      "16x32x32 input, kernel 4, 4 groups, PyTorch default init and torch.rand input from --seed.",
      "fused3d"};
  std::string precision = "accurate";
  app.add_option("--model", o.model, "TorchScript model file (torch.jit.script or torch.jit.trace)")->type_name("FILE");
  app.add_option("--input", o.input, "input tensor (B, Cin, D, H, W) saved with torch.save")->type_name("FILE");
  app.add_option("--output", o.output, "write the (B, Cout) result here (.pt, reads with torch.load)")
      ->type_name("FILE");
  app.add_option("--device", o.device, "auto, cpu, cuda or cuda:N (auto: cuda:0 if present, else cpu)")
      ->type_name("DEVICE")
      ->capture_default_str();
  app.add_option("--precision", precision,
                 "accurate: rel. L2 <= 1e-5 vs float64 (tensor cores: x fp16, weights split hi+lo); tf32: "
                 "<= 1e-3 (x and weights with TF32's 11 bits); float16/bfloat16 models compute in float32")
      ->type_name("accurate|tf32")
      ->check(one_of({"accurate", "tf32"}))
      ->capture_default_str();
  app.add_flag("--check", o.check,
               "also run libtorch native ops; print max abs and relative L2 error; exit 1 over the "
               "precision's bound (1e-5 accurate, 1e-3 tf32; plus the output rounding, 2^-11 float16, 2^-8 bfloat16) "
               "or where NaN and Inf differ from native's");
  app.add_option("--bench", o.bench, "time fused and native over N runs after warm-up (0: off)")
      ->type_name("N")
      ->check(whole_number(0, 1000000));
  app.add_option("--seed", o.seed, "seed for the embedded model and the generated input")
      ->type_name("S")
      ->check(whole_number(0, std::numeric_limits<int64_t>::max()))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "batch size of the generated input (when no --input)")
      ->type_name("B")
      ->check(whole_number(0, int64_t{1} << 40))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "fused3d: error: " << e.what() << " (see --help)\n";
    return kExitUsage;
  }
  o.precision = precision == "tf32" ? Precision::kTF32 : Precision::kAccurate;
  try {
    return run(o);
  } catch (const InputError& e) {
    std::cerr << "fused3d: error: " << e.what() << "\n";
    return kExitUsage;
  } catch (const c10::Error& e) {
    std::cerr << "fused3d: error: " << first_line(e.what_without_backtrace()) << "\n";
    return kExitInternal;
  } catch (const std::exception& e) {
    std::cerr << "fused3d: error: " << first_line(e.what()) << "\n";
    return kExitInternal;
  }
}
