// fused3d: the command line. Loads a model and an input (or builds the embedded default), runs the
// fused pipeline, and optionally writes the result, checks it against libtorch and times both; or
// runs it over many input files (--output-dir), reading the next file while one is computed.
#include "fused3d/bench.h"
#include "fused3d/errors.h"
#include "fused3d/jobs.h"
#include "fused3d/model.h"
#include "fused3d/pipeline.h"
#include "fused3d/tensor_io.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/PinnedMemoryAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

namespace fused3d {
namespace {

// --check tolerance on the relative L2 error against libtorch native (float32, TF32 off, whose own
// error vs float64 is ~1e-7: OPTIMIZATION.md 3.1). Each is what the mode promises against float64:
// accurate (weights split hi+lo, and x too but in the kernel-4x4x4 kernels, whose x rounding
// averages out only on inputs with many distinct values: OPTIMIZATION.md 3.6) measures 1e-7 to
// 4e-6 on continuous inputs, float32 paths ~1e-7: bound 1e-5; tf32
// measures up to 8e-4 at inputs in [5, 6) (weight rounding does not average out): bound 1e-3.
// A float16 / bfloat16 model computes in float32 and rounds each output once, to within half an
// ulp: 2^-11 (float16) or 2^-8 (bfloat16) of each value, so of the L2 norm too; that is added.
double check_tolerance(Precision precision, at::ScalarType dtype) {
  const double rounding = dtype == at::kHalf ? std::ldexp(1.0, -11) : dtype == at::kBFloat16 ? std::ldexp(1.0, -8) : 0.0;
  return (precision == Precision::kTF32 ? 1e-3 : 1e-5) + rounding;
}
constexpr int64_t kDefaultBatch = 1024;

struct Options {
  std::string model, output, output_dir, shard, device = "auto";
  std::vector<std::string> inputs;
  Precision precision = Precision::kAccurate;
  bool check = false, skip_existing = false, quiet = false, timings = false;
  int bench = 0;
  uint64_t seed = 0;
  int64_t batch = kDefaultBatch;
  int64_t max_batch = 0;  // samples per device pass; 0: what fits
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// --timings: wall time per phase of the command. The GPU phases are closed by a device
// synchronization, so each shows its own cost (and the phases no longer overlap).
struct Timings {
  std::mutex mutex;                                    // the reader and writer threads add theirs
  std::vector<std::pair<std::string, double>> phases;  // in order of first use
  void add(const std::string& phase, double seconds) {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& p : phases)
      if (p.first == phase) {
        p.second += seconds;
        return;
      }
    phases.emplace_back(phase, seconds);
  }
  void print(std::ostream& os, double total) const {
    os << "timings:";
    for (const auto& [phase, s] : phases) os << " " << phase << " " << std::lround(s * 1e3) << " ms,";
    os << " total " << std::lround(total * 1e3) << " ms\n";
  }
};

void synchronize(const at::Device& device) {
  if (device.is_cuda()) at::cuda::getCurrentCUDAStream(device.index()).synchronize();
}

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

// For a GPU run an input's storage is read straight into pinned memory, from which the copy to the
// device runs at the full rate and asynchronously.
at::Allocator* input_allocator(const at::Device& device) {
  return device.is_cuda() ? at::cuda::getPinnedMemoryAllocator() : nullptr;
}

// Samples per pass to the device: --max-batch where given, and no more than fit in half of the
// GPU's free memory (the kernels' own workspace is O(B x C), the input is what takes room).
int64_t samples_per_pass(const at::Tensor& x, const at::Device& device, int64_t max_batch) {
  const int64_t batch = std::max<int64_t>(x.size(0), 1);
  int64_t per_pass = max_batch > 0 ? std::min(max_batch, batch) : batch;
  if (!device.is_cuda()) return per_pass;
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t sample_bytes = std::max<int64_t>(1, x.numel() / batch * static_cast<int64_t>(x.element_size()));
  return std::max<int64_t>(1, std::min<int64_t>(per_pass, static_cast<int64_t>(free_bytes / 2) / sample_bytes));
}

// The fused result of x (on the host, pinned for a GPU run) in passes of `per_pass` samples: each
// pass's samples copied to the device, computed, its rows of the result copied back. With `native`,
// libtorch's result of the same passes too (for --check). A pass's result depends on its samples
// only; where a pass has fewer samples than the whole, the plan may tile them otherwise (plan.h).
at::Tensor forward_in_passes(const at::Tensor& x, const FusedLayer& layer, Precision precision, const at::Device& device,
                             int64_t per_pass, at::Tensor* native) {
  const int64_t batch = x.size(0);
  at::Tensor out = at::empty({batch, layer.out_channels()}, x.options().pinned_memory(device.is_cuda()));
  if (native) *native = at::empty({batch, layer.out_channels()}, x.options().dtype(at::kDouble));
  for (int64_t first = 0; first < batch; first += per_pass) {
    const int64_t last = std::min(batch, first + per_pass);
    const at::Tensor xd = x.slice(0, first, last).to(device, /*non_blocking=*/true);
    at::Tensor od = at::full({last - first, layer.out_channels()}, NAN, xd.options());
    fused_forward_out(xd, layer, precision, od);
    out.slice(0, first, last).copy_(od, /*non_blocking=*/true);
    if (native) {
      const bool reduced = xd.scalar_type() != at::kFloat;
      native->slice(0, first, last)
          .copy_(reduced ? native_forward(xd.to(at::kFloat), layer_to(layer, device, at::kFloat)) : native_forward(xd, layer));
    }
  }
  synchronize(device);
  return out;
}

// The fused result against libtorch native, one line; whether it passed.
bool report_check(const at::Tensor& out, const at::Tensor& native, Precision precision, at::ScalarType dtype,
                  const at::Device& device, const std::string& prefix) {
  const bool reduced = dtype != at::kFloat;
  const Comparison c = compare(out.to(at::kDouble), native.to(at::kDouble).to(out.device()));
  const double tolerance = check_tolerance(precision, dtype);
  const bool pass = c.same_specials && c.rel_l2 <= tolerance;
  char line[320];
  std::snprintf(line, sizeof line,
                "%s: vs libtorch native%s on %s: max abs error %.3g, relative L2 error %.3g (tolerance %.2g)%s: %s\n",
                prefix.c_str(), reduced ? " (float32 on the same values)" : "", device.str().c_str(), c.max_abs,
                c.rel_l2, tolerance, c.specials.c_str(), pass ? "PASS" : "FAIL");
  std::cout << line;
  return pass;
}

// float16 / bfloat16: the reference is libtorch in float32 on the same values (its float16
// pipeline rounds every intermediate tensor and is itself less accurate than the fused one).
bool check_against_native(const at::Tensor& x, const FusedLayer& layer, const at::Tensor& out, Precision precision,
                          const at::Device& device, const std::string& prefix) {
  const bool reduced = x.scalar_type() != at::kFloat;
  const at::Tensor ref =
      reduced ? native_forward(x.to(at::kFloat), layer_to(layer, device, at::kFloat)) : native_forward(x, layer);
  return report_check(out, ref, precision, x.scalar_type(), device, prefix);
}

// Many inputs, one output each under --output-dir, over one or more devices. Each device has its
// own worker: it takes the next input of the shared list (so a faster device takes more), reads the
// one after it in a thread (into pinned memory for a GPU) while the current one is copied, computed
// and written, and writes each result in another thread: at most two inputs and two results per
// device whatever the file count. A file that cannot be read, does not fit the model or cannot be
// written is reported on stderr by name and the others go on; the exit code is then 2. A result is
// what a single run on that device gives, bit for bit: the same kernels on the same tensors.
int run_files(const Options& o, const Model& model, const std::vector<at::Device>& devices, Timings* timings) {
  const std::vector<std::string> all = expand_inputs(o.inputs);
  const Shard shard = o.shard.empty() ? Shard{} : parse_shard(o.shard);
  const std::vector<std::string> files = shard_of(all, shard);
  const std::vector<std::string> outputs = outputs_in(files, o.output_dir);
  make_directories(o.output_dir);
  std::vector<size_t> todo;
  for (size_t i = 0; i < files.size(); ++i)
    if (!(o.skip_existing && is_file(outputs[i]))) todo.push_back(i);
  const size_t skipped = files.size() - todo.size();

  struct Loaded {
    at::Tensor x;
    std::string error;
    double seconds = 0;
  };
  const bool progress = !o.quiet && isatty(STDERR_FILENO);
  const Clock::time_point start = Clock::now();
  std::mutex mutex;  // what follows, and the streams
  size_t written = 0, failed = 0, check_failed = 0, done = 0;
  int64_t samples = 0;
  double bytes = 0;
  std::vector<size_t> per_device(devices.size(), 0);
  std::atomic<size_t> next{0};
  const auto report = [&](size_t i, const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex);
    if (progress) std::cerr << "\r\033[K";
    std::cerr << "fused3d: error: " << files[i] << ": " << why << "\n";
    ++failed;
  };

  const auto worker = [&](size_t d) {
    const at::Device device = devices[d];
    std::optional<c10::cuda::CUDAGuard> guard;
    if (device.is_cuda()) guard.emplace(device);
    const FusedLayer layer = layer_to(model.layer, device, model.layer.weight.scalar_type());
    at::Allocator* allocator = input_allocator(device);
    const auto load = [allocator, &files](size_t i) {
      const Clock::time_point begin = Clock::now();
      Loaded l;
      try {
        l.x = load_tensor(files[i], allocator);
      } catch (const std::exception& e) {
        l.error = first_line(e.what());
      }
      l.seconds = seconds_since(begin);
      return l;
    };
    std::future<std::string> pending_write;  // the previous result's write: "" or why it failed
    size_t pending_index = 0;
    const auto finish_write = [&]() {
      if (!pending_write.valid()) return;
      const std::string why = pending_write.get();
      if (!why.empty()) return report(pending_index, why);
      std::lock_guard<std::mutex> lock(mutex);
      ++written;
      ++per_device[d];
      if (!o.quiet && !progress) std::cout << "fused3d: wrote   " << outputs[pending_index] << "\n";
    };
    size_t t = next++;
    std::future<Loaded> upcoming;
    if (t < todo.size()) upcoming = std::async(std::launch::async, load, todo[t]);
    while (t < todo.size()) {
      const size_t i = todo[t];
      Loaded current = upcoming.get();
      const size_t after = next++;
      if (after < todo.size()) upcoming = std::async(std::launch::async, load, todo[after]);
      if (timings) timings->add("input read (in the reader threads)", current.seconds);
      t = after;
      if (!current.error.empty()) {
        report(i, current.error);
        continue;
      }
      if (const std::string why = input_mismatch_reason(current.x, model.layer); !why.empty()) {
        report(i, why);
        continue;
      }
      at::Tensor out;
      try {
        const Clock::time_point phase = Clock::now();
        at::Tensor native;
        out = forward_in_passes(current.x, layer, o.precision, device, samples_per_pass(current.x, device, o.max_batch),
                                o.check ? &native : nullptr);
        if (timings) timings->add("to device, compute, to host", seconds_since(phase));
        if (o.check) {
          std::lock_guard<std::mutex> lock(mutex);
          if (!report_check(out, native, o.precision, current.x.scalar_type(), device, "check " + files[i])) ++check_failed;
        }
      } catch (const std::exception& e) {
        report(i, first_line(e.what()));
        continue;
      }
      finish_write();
      pending_index = i;
      pending_write = std::async(std::launch::async, [out, path = outputs[i], timings]() -> std::string {
        const Clock::time_point phase = Clock::now();
        try {
          save_tensor(path, out);
        } catch (const std::exception& e) {
          return first_line(e.what());
        }
        if (timings) timings->add("output write (in the writer threads)", seconds_since(phase));
        return "";
      });
      std::lock_guard<std::mutex> lock(mutex);
      samples += current.x.size(0);
      bytes += static_cast<double>(current.x.numel()) * current.x.element_size();
      ++done;
      const double elapsed = seconds_since(start);
      if (progress && elapsed > 2.0) {
        const double left = elapsed / static_cast<double>(done) * static_cast<double>(todo.size() - done);
        char line[200];
        std::snprintf(line, sizeof line, "\r\033[Kfused3d: %zu/%zu files, %.0f samples/s, %.2f GB/s, %.0f s left", done,
                      todo.size(), samples / elapsed, bytes / elapsed / 1e9, left);
        std::cerr << line << std::flush;
      }
    }
    finish_write();
  };
  // A worker's failure that is not a file's (a device that cannot be used) ends the command.
  std::vector<std::future<void>> workers;
  for (size_t d = 0; d < devices.size(); ++d) workers.push_back(std::async(std::launch::async, worker, d));
  for (std::future<void>& w : workers) w.get();

  if (progress && seconds_since(start) > 2.0) std::cerr << "\r\033[K";
  std::cout << "fused3d: " << files.size() << " input" << (files.size() == 1 ? "" : "s");
  if (shard.count > 1) std::cout << " (share " << shard.index << " of " << shard.count << " of " << all.size() << ")";
  std::cout << ": " << written << " written, " << skipped << " skipped (output exists), " << failed << " failed";
  if (o.check) std::cout << ", " << check_failed << " over the check's tolerance";
  std::cout << " in " << std::lround(seconds_since(start) * 1e3) << " ms";
  if (devices.size() > 1) {
    std::cout << "; written per device:";
    for (size_t d = 0; d < devices.size(); ++d) std::cout << (d ? ", " : " ") << devices[d] << " " << per_device[d];
  }
  std::cout << "\n";
  return failed > 0 ? kExitUsage : check_failed > 0 ? kExitCheckFailed : 0;
}

// One input in passes of per_pass samples (more than the GPU holds at once, or --max-batch).
int run_in_passes(const Options& o, const at::Tensor& x, const FusedLayer& layer, const at::Device& device,
                  int64_t per_pass, Timings* timings, Clock::time_point start) {
  if (o.bench > 0) throw InputError("--bench times the input on the device whole; it takes " + std::to_string(per_pass) +
                                    " of its " + std::to_string(x.size(0)) + " samples at a time");
  std::cout << "fused3d: input   " << shape_string(x.sizes()) << " " << dtype_name(x.scalar_type()) << " in passes of "
            << per_pass << " samples\n"
            << "fused3d: device  " << device_name(device) << "\n"
            << "fused3d: kernel  " << fused_kernel_name(x.slice(0, 0, per_pass).to(device), layer, o.precision) << "\n";
  const Clock::time_point phase = Clock::now();
  at::Tensor native;
  const at::Tensor out = forward_in_passes(x, layer, o.precision, device, per_pass, o.check ? &native : nullptr);
  if (timings) timings->add("to device, compute, to host", seconds_since(phase));
  std::cout << "fused3d: output  " << shape_string(out.sizes()) << " " << dtype_name(out.scalar_type()) << ", "
            << first_values(out) << std::endl;
  if (!o.output.empty()) {
    const Clock::time_point write = Clock::now();
    save_tensor(o.output, out);
    if (timings) timings->add("output write", seconds_since(write));
    std::cout << "fused3d: wrote   " << o.output << "\n";
  }
  int status = 0;
  if (o.check && !report_check(out, native, o.precision, x.scalar_type(), device, "check")) status = kExitCheckFailed;
  if (timings) timings->print(std::cout, seconds_since(start));
  return status;
}

// Returns the process exit code.
int run(const Options& o) {
  const Clock::time_point start = Clock::now();
  std::optional<Timings> timings;
  if (o.timings) timings.emplace();
  Clock::time_point phase = Clock::now();
  std::vector<at::Device> devices;
  if (o.device == "all") {
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    for (int64_t d = 0; d < count; ++d) devices.emplace_back(at::kCUDA, static_cast<c10::DeviceIndex>(d));
    if (devices.empty()) devices.emplace_back(at::kCPU);
  } else {
    for (const std::string& name : device_list(o.device)) devices.push_back(resolve_device(name));
  }
  if (devices.size() > 1 && o.output_dir.empty())
    throw InputError("--device " + o.device + " names " + std::to_string(devices.size()) +
                     " devices: they share the inputs of --output-dir");
  const at::Device device = devices[0];
  for (const at::Device& d : devices)
    if (d.is_cuda()) at::cuda::getCurrentCUDAStream(d.index()).synchronize();  // CUDA starts here
  if (timings) timings->add("device start", seconds_since(phase));
  if (!o.output_dir.empty() && !o.output.empty())
    throw InputError("--output names one result file, --output-dir one per input: give one of them");
  if (!o.output_dir.empty() && o.bench > 0) throw InputError("--bench times one input; it does not take --output-dir");
  if (o.output_dir.empty() && (o.skip_existing || !o.shard.empty()))
    throw InputError(std::string(o.skip_existing ? "--skip-existing" : "--shard") + " needs --output-dir");
  if (o.output_dir.empty() && o.inputs.size() > 1)
    throw InputError(std::to_string(o.inputs.size()) + " inputs need --output-dir (one result file each)");

  phase = Clock::now();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const Model model = o.model.empty() ? default_model(generator) : load_model(o.model);
  if (const std::string why = unsupported_reason(model.layer); !why.empty())
    throw InputError("model '" + model.source + "': " + why);
  const FusedLayer layer = layer_to(model.layer, device, model.layer.weight.scalar_type());
  if (timings) timings->add("model load", seconds_since(phase));
  if (!o.output_dir.empty()) {
    if (o.inputs.empty()) throw InputError("--output-dir needs --input files, a directory or a pattern");
    std::cout << "fused3d: model   " << model.source << ": " << describe(layer) << "\n";
    for (const at::Device& d : devices) std::cout << "fused3d: device  " << device_name(d) << "\n";
    const int status = run_files(o, model, devices, timings ? &*timings : nullptr);
    if (timings) timings->print(std::cout, seconds_since(start));
    return status;
  }

  at::Tensor x;
  std::string input_source;
  phase = Clock::now();
  if (o.inputs.empty()) {
    x = default_input(model.layer, o.batch, generator);
    input_source = "torch.rand, seed " + std::to_string(o.seed);
  } else {
    const std::vector<std::string> files = expand_inputs(o.inputs);
    if (files.size() > 1)
      throw InputError("'" + o.inputs[0] + "' names " + std::to_string(files.size()) +
                       " files: several inputs need --output-dir (one result file each)");
    input_source = files[0];
    x = load_tensor(input_source, input_allocator(device));
  }
  if (timings) timings->add("input read", seconds_since(phase));
  if (const std::string why = input_mismatch_reason(x, model.layer); !why.empty())
    throw InputError("input '" + input_source + "': " + why);
  const int64_t per_pass = samples_per_pass(x, device, o.max_batch);
  if (per_pass < x.size(0)) return run_in_passes(o, x, layer, device, per_pass, timings ? &*timings : nullptr, start);

  phase = Clock::now();
  x = x.to(device, /*non_blocking=*/true);
  if (timings) {
    synchronize(device);
    timings->add("to device", seconds_since(phase));
  }
  std::cout << "fused3d: model   " << model.source << ": " << describe(layer) << "\n"
            << "fused3d: input   " << shape_string(x.sizes()) << " " << dtype_name(x.scalar_type()) << " ("
            << input_source << ")\n"
            << "fused3d: device  " << device_name(device) << "\n"
            << "fused3d: kernel  " << fused_kernel_name(x, layer, o.precision) << "\n";

  // NaN-poisoned, so an element the kernels fail to write shows in --check.
  phase = Clock::now();
  at::Tensor out = at::full({x.size(0), layer.out_channels()}, NAN, x.options());
  fused_forward_out(x, layer, o.precision, out);
  if (timings) {
    synchronize(device);
    timings->add("compute", seconds_since(phase));
  }
  phase = Clock::now();
  const at::Tensor out_host = out.cpu();
  if (timings) timings->add("to host", seconds_since(phase));
  std::cout << "fused3d: output  " << shape_string(out.sizes()) << " " << dtype_name(out.scalar_type()) << ", "
            << first_values(out_host) << std::endl;
  if (!o.output.empty()) {
    phase = Clock::now();
    save_tensor(o.output, out_host);
    if (timings) timings->add("output write", seconds_since(phase));
    std::cout << "fused3d: wrote   " << o.output << "\n";
  }

  int status = 0;
  if (o.check && !check_against_native(x, layer, out, o.precision, device, "check")) status = kExitCheckFailed;
  if (timings) timings->print(std::cout, seconds_since(start));
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
  app.add_option("--input", o.inputs,
                 "input tensor (B, Cin, D, H, W) saved with torch.save; with --output-dir: several files, "
                 "directories (their .pt files) or quoted glob patterns")
      ->type_name("FILE")
      ->expected(1, -1);
  app.add_option("--output", o.output, "write the (B, Cout) result here (.pt, reads with torch.load)")
      ->type_name("FILE");
  app.add_option("--output-dir", o.output_dir,
                 "write one result per input here, under the input's file name; bad inputs are reported and "
                 "skipped (exit 2), results are written whole or not at all")
      ->type_name("DIR");
  app.add_flag("--skip-existing", o.skip_existing, "with --output-dir: leave out inputs whose result exists");
  app.add_option("--shard", o.shard,
                 "with --output-dir: take inputs K, K+N, K+2N, ... of the sorted list (0 <= K < N), for one of N "
                 "processes (a Slurm array task, a Kubernetes indexed job)")
      ->type_name("K/N");
  app.add_flag("--timings", o.timings, "print the wall time of each phase (device start, model load, input read, "
                                       "to device, compute, to host, output write)");
  app.add_flag("--quiet", o.quiet, "no progress line and no line per written file");
  app.add_option("--max-batch", o.max_batch,
                 "samples per pass to the device (default: as many as fit in half the GPU's free memory); a larger "
                 "input runs in passes")
      ->type_name("B")
      ->check(whole_number(1, int64_t{1} << 40));
  app.add_option("--device", o.device,
                 "auto, cpu, cuda or cuda:N (auto: cuda:0 if present, else cpu); with --output-dir also a list, "
                 "cuda:0,cuda:1,..., or all (every GPU): the devices share the inputs, each with its own pipeline")
      ->type_name("DEVICE")
      ->capture_default_str();
  app.add_option("--precision", precision,
                 "accurate: rel. L2 <= 1e-5 vs float64 (tensor cores: weights split hi+lo, x too but in the k4 kernels; "
                 "OPTIMIZATION.md 3.6); tf32: <= 1e-3 (x and "
                 "weights with TF32's 11 bits); float16/bfloat16 models: exact products, float32 sums")
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
