// The real executable, driven as a user drives it: good runs, and every kind of bad input giving
// one line on stderr and exit code 2 (never an abort or a stack dump).
#include "fused3d/bench.h"
#include "fused3d/errors.h"
#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace fused3d::test {
namespace {

struct CliRun {
  int code;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string slurp_command(const std::string& command);

int shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// What a shell command prints on stdout.
std::string slurp_command(const std::string& command) {
  const std::string file = ::testing::TempDir() + "/fused3d_cmd_" + std::to_string(getpid());
  shell("(" + command + ") >" + file);
  return slurp(file);
}

CliRun run_cli(const std::string& args) {
  // ctest runs test processes in parallel: the pid keeps their files apart.
  static int counter = 0;
  const std::string base =
      ::testing::TempDir() + "/fused3d_cli_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  const int code = shell(std::string(FUSED3D_EXECUTABLE) + " " + args + " >" + base + ".out 2>" + base + ".err");
  return {code, slurp(base + ".out"), slurp(base + ".err")};
}

// Relative L2 of a .pt the executable wrote against a .pt PyTorch wrote, computed by Python.
// Python reads our .pt: same shape, the dtype it should have, within `bound` (relative L2) of its own.
int python_compare(const std::string& ours, const std::string& reference, double bound,
                   const std::string& dtype = "float32") {
  std::ostringstream cmd;
  cmd << FUSED3D_PYTHON << " -c \"import sys, torch; o = torch.load(sys.argv[1]); r = torch.load(sys.argv[2]); "
      << "e = ((o.double() - r.double()).norm() / r.double().norm()).item(); print('python: relative L2', e, o.dtype); "
      << "sys.exit(0 if o.shape == r.shape and o.dtype == torch." << dtype << " and e <= " << bound << " else 1)\" "
      << ours << " " << reference;
  return shell(cmd.str());
}

std::vector<std::string> devices() {
  std::vector<std::string> d{"cpu"};
  if (torch::cuda::is_available()) d.push_back("cuda");
  return d;
}

TEST(Cli, HelpListsTheOptionsInPlainWords) {
  const CliRun r = run_cli("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* option : {"--model FILE", "--input FILE", "--output FILE", "--device DEVICE", "--check",
                             "--bench N", "--seed S", "--batch B", "--precision accurate|tf32"})
    EXPECT_NE(r.out.find(option), std::string::npos) << option << "\n" << r.out;
  for (const char* internal : {"ENUM", "->0", "NONNEGATIVE", "INT", "TEXT", "1797693"})
    EXPECT_EQ(r.out.find(internal), std::string::npos) << internal << "\n" << r.out;
}

// A model with a NaN weight: native and fused give NaN in the same places; --check compares those
// places and judges the finite part (as torch.testing with equal_nan), so it passes.
TEST(Cli, CheckComparesNanPlacesAndJudgesTheFinitePart) {
  for (const std::string& device : devices()) {
    SCOPED_TRACE(device);
    const CliRun r = run_cli("--model " + std::string(FUSED3D_FIXTURE_DIR) + "/nan_weight.pt --batch 2 --check --device " + device);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("NaN or Inf in 8 of 32 outputs, as in native: PASS"), std::string::npos) << r.out;
  }
}

TEST(Cli, BadInputGivesOneLineAndExitCode2) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  const struct {
    std::string args, fragment;
  } cases[] = {
      {"--bogus", "--bogus"},
      {"--batch -3", "--batch: must be from 0 to"},
      {"--bench -3", "--bench: must be from 0 to 1000000, got -3"},
      {"--bench many", "--bench: must be a whole number, got 'many'"},
      {"--precision fast", "--precision: must be accurate or tf32, got 'fast'"},
      {"--device tpu", "--device"},
      {"--model " + f + "/missing.pt", "cannot open model file"},
      {"--input " + f + "/missing.pt", "does not exist"},
      {"--model " + f + "/standard_x.pt", "not a TorchScript model"},
      {"--model " + f + "/relu_model.pt", "has no hardswish"},
      {"--model " + f + "/scaled_output.pt", "returns something other than the mean"},
      {"--model " + f + "/reflect_padded.pt", "does not apply the convolution"},
      {"--model " + f + "/conv2d_model.pt", "has no convolution"},
      {"--model " + f + "/same_padding_even.pt", "pads one side more than the other"},
      {"--model " + f + "/wrong_gamma.pt", "group_norm weight must have shape (16,)"},
      {"--model " + f + "/flat_conv_weight.pt", "conv weight must be 5-D"},
      {"--model " + f + "/float16_model.pt --input " + f + "/standard_x.pt", "input dtype float32 does not match the model dtype float16"},
      {"--model " + f + "/float64_model.pt", "float64 is not supported"},
      {"--input " + f + "/rank4_x.pt", "must be 5-D"},
      {"--input " + f + "/int64_x.pt", "dtype int64"},
      {"--input " + f + "/channels5_x.pt", "has 5 channels, the model expects 3"},
      {"--input " + f + "/small_x.pt", "smaller than the conv kernel"},
      {"--input " + f + "/list.pt", "expected a single tensor"},
      {"--input " + f + "/text.pt", "not a tensor file"},
      {"--input " + f + "/truncated_x.pt", "not a tensor file"},
      {"--input " + f + "/forged_short_x.pt", "that need more than its 2880 bytes"},
      {"--input " + f + "/forged_huge_x.pt", "(1073741824, 3, 16, 32, 32) that need more"},
      {"--input " + f + "/forged_offset_x.pt", "at offset 1000000000"},
      {"--input " + f + "/forged_2p40_x.pt", "not a tensor file"},
      {"--input " + f + "/forged_negative_x.pt", "not a tensor file"},
      {"--batch 1 --device cpu --output " + f + "/no_such_dir/out.pt", "cannot write output file"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const CliRun r = run_cli(c.args);
    EXPECT_EQ(r.code, kExitUsage) << r.err;
    EXPECT_EQ(r.err.rfind("fused3d: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.fragment), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
}

TEST(Cli, ScriptedAndTracedExportsCheckAndWriteWhatPythonReads) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  for (const std::string& device : devices())
    for (const char* model : {"standard_scripted.pt", "standard_traced.pt"}) {
      SCOPED_TRACE(device + " " + model);
      const std::string out = ::testing::TempDir() + "/fused3d_out_" + device + "_" + model;
      const CliRun r = run_cli("--model " + f + "/" + model + " --input " + f + "/standard_x.pt --output " + out +
                               " --check --device " + device);
      EXPECT_EQ(r.code, 0) << r.out << r.err;
      EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
      EXPECT_EQ(python_compare(out, f + "/standard_ref.pt", kFloat32Bound), 0);
    }
}

// Every conv setting (scripted and traced), and float16 / bfloat16 models whose result keeps their
// dtype and is within one output rounding of PyTorch's float32 result on the same values.
// --bench's FLOP count follows the conv settings: for the every-setting model it is 2 multiply-adds
// per tap and input channel of a group for each of libtorch's output elements.
TEST(Cli, BenchCountsTheConvsFlopsWithItsSettings) {
  const Model m = load_model(std::string(FUSED3D_FIXTURE_DIR) + "/settings_scripted.pt");
  const FusedLayer& l = m.layer;
  const at::Tensor x = at::rand({2, 4, 7, 8, 10});
  const at::Tensor y = at::conv3d(x, l.weight, l.bias, l.stride, l.padding, l.dilation, l.conv_groups);
  const auto k = l.kernel();
  EXPECT_DOUBLE_EQ(conv_flops(x, l), 2.0 * y.numel() * l.in_channels() * k[0] * k[1] * k[2]);
}

TEST(Cli, ConvSettingsAndReducedPrecisionModelsRunAndWriteWhatPythonReads) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  const struct {
    std::string model, input, reference, dtype;
    double bound;
  } cases[] = {
      {"settings_scripted.pt", "settings_x.pt", "settings_ref.pt", "float32", kFloat32Bound},
      {"settings_traced.pt", "settings_x.pt", "settings_ref.pt", "float32", kFloat32Bound},
      {"float16_model.pt", "float16_x.pt", "float16_ref.pt", "float16", kFloat32Bound + output_rounding(at::kHalf)},
      {"bfloat16_model.pt", "bfloat16_x.pt", "bfloat16_ref.pt", "bfloat16", kFloat32Bound + output_rounding(at::kBFloat16)},
  };
  for (const std::string& device : devices())
    for (const auto& c : cases) {
      SCOPED_TRACE(device + " " + c.model);
      const std::string out = ::testing::TempDir() + "/fused3d_out_" + device + "_" + c.model;
      const CliRun r = run_cli("--model " + f + "/" + c.model + " --input " + f + "/" + c.input + " --output " + out +
                               " --check --device " + device);
      EXPECT_EQ(r.code, 0) << r.out << r.err;
      EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
      if (device == "cuda") EXPECT_NE(r.out.find("kernel  igemm"), std::string::npos) << r.out;  // sm_80 on
      EXPECT_EQ(python_compare(out, f + "/" + c.reference, c.bound, c.dtype), 0);
    }
}

TEST(Cli, EmbeddedDefaultPassesCheck) {
  // The full standard batch on the GPU; a small one on the CPU (68.8 GFLOP is minutes there).
  const std::string args = torch::cuda::is_available() ? "--check --device cuda" : "--check --device cpu --batch 4";
  const CliRun r = run_cli(args);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("embedded default"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
}

// Two processes, same seed: the written results are bitwise equal (no atomics, fixed merge order).
TEST(Cli, BitwiseIdenticalAcrossProcesses) {
  for (const std::string& device : devices()) {
    std::string files[2];
    for (int run = 0; run < 2; ++run) {
      files[run] = ::testing::TempDir() + "/fused3d_det_" + std::to_string(getpid()) + "_" + device + std::to_string(run) + ".pt";
      ASSERT_EQ(run_cli("--device " + device + " --batch 8 --seed 3 --output " + files[run]).code, 0);
    }
    const std::string cmd = std::string(FUSED3D_PYTHON) +
                            " -c \"import sys, torch; sys.exit(0 if torch.equal(torch.load(sys.argv[1]), torch.load(sys.argv[2])) else 1)\" " +
                            files[0] + " " + files[1];
    EXPECT_EQ(shell(cmd), 0) << device;
  }
}

// Files under a fresh directory of the test's temporary one.
std::string fresh_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/fused3d_" + name + "_" + std::to_string(getpid());
  shell("rm -rf " + dir + " && mkdir -p " + dir);
  return dir;
}

int count_files(const std::string& dir, const std::string& pattern) {
  return std::stoi(slurp_command("ls " + dir + " | grep -c -e '" + pattern + "' || true"));
}

bool bitwise_equal(const std::string& a, const std::string& b) {
  return shell(std::string(FUSED3D_PYTHON) +
               " -c \"import sys, torch; sys.exit(0 if torch.equal(torch.load(sys.argv[1]), torch.load(sys.argv[2])) else 1)\" " +
               a + " " + b) == 0;
}

// Many inputs, one command: a result per good input under its name, bitwise what a run on that
// file alone writes; each bad file (not a tensor file, truncated, the wrong channel count) named
// on stderr with its reason, the others done, exit 2, a summary line; no temporary file left.
// A rerun with --skip-existing does only what is missing; two shards of two do everything once.
TEST(Cli, ManyInputsOneResultEachBadFilesReported) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  for (const std::string& device : devices()) {
    SCOPED_TRACE(device);
    const std::string in = fresh_dir("many_in_" + device), out = fresh_dir("many_out_" + device);
    shell("cp " + f + "/standard_x.pt " + in + "/a.pt && cp " + f + "/standard_x.pt " + in + "/c.pt && cp " + f +
          "/settings_x.pt " + in + "/wrong_channels.pt && echo nonsense > " + in + "/not_a_tensor.pt && head -c 3000 " +
          f + "/standard_x.pt > " + in + "/truncated.pt");
    const std::string model = " --model " + f + "/standard_scripted.pt --device " + device;
    const CliRun r = run_cli(model + " --input " + in + " --output-dir " + out);
    EXPECT_EQ(r.code, kExitUsage) << r.out << r.err;
    for (const char* bad : {"not_a_tensor.pt", "truncated.pt", "wrong_channels.pt"})
      EXPECT_NE(r.err.find(std::string(bad) + ": "), std::string::npos) << bad << "\n" << r.err;
    EXPECT_NE(r.out.find("5 inputs: 2 written, 0 skipped (output exists), 3 failed"), std::string::npos) << r.out;
    EXPECT_EQ(count_files(out, "\\.pt$"), 2) << slurp_command("ls " + out);
    EXPECT_EQ(count_files(out, "tmp"), 0) << "no temporary file left";
    const std::string alone = out + "_alone.pt";
    ASSERT_EQ(run_cli(model + " --input " + in + "/a.pt --output " + alone).code, 0);
    EXPECT_TRUE(bitwise_equal(out + "/a.pt", alone)) << "a result of many is what a single run gives";

    shell("rm " + out + "/c.pt");
    const CliRun again = run_cli(model + " --input '" + in + "/[ac].pt' --output-dir " + out + " --skip-existing");
    EXPECT_EQ(again.code, 0) << again.err;
    EXPECT_NE(again.out.find("2 inputs: 1 written, 1 skipped (output exists), 0 failed"), std::string::npos) << again.out;

    const std::string sharded = fresh_dir("many_shards_" + device);
    for (const char* share : {"0/2", "1/2"}) {
      const CliRun s = run_cli(model + " --input " + in + "/a.pt " + in + "/c.pt --output-dir " + sharded + " --shard " + share);
      EXPECT_EQ(s.code, 0) << s.err;
      EXPECT_NE(s.out.find("1 input (share"), std::string::npos) << s.out;
    }
    EXPECT_EQ(count_files(sharded, "\\.pt$"), 2);
    EXPECT_TRUE(bitwise_equal(sharded + "/c.pt", alone));
  }
}

// Several devices share a job's inputs, each with its own pipeline (two on the CPU here, where
// there is no second GPU; `all` is every GPU): every input done once, the summary counts each
// device's share, the results bitwise what a single run gives.
TEST(Cli, DevicesShareTheInputs) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  const std::string in = fresh_dir("devices_in"), out = fresh_dir("devices_out");
  for (int i = 0; i < 6; ++i) shell("cp " + f + "/standard_x.pt " + in + "/x" + std::to_string(i) + ".pt");
  const std::string model = " --model " + f + "/standard_scripted.pt";
  const std::string list = torch::cuda::is_available() ? "cuda:0,cpu" : "cpu,cpu";
  const CliRun r = run_cli(model + " --input " + in + " --output-dir " + out + " --device " + list);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("6 inputs: 6 written, 0 skipped (output exists), 0 failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("written per device:"), std::string::npos) << r.out;
  // "...; written per device: cpu 4, cpu 2"
  int shares = 0;
  const size_t list_at = r.out.find("written per device:");
  if (list_at != std::string::npos) {
    std::istringstream items(r.out.substr(list_at + 19, r.out.find('\n', list_at) - list_at - 19));
    std::string name, count;
    while (items >> name >> count) shares += std::atoi(count.c_str());
  }
  EXPECT_EQ(shares, 6) << "the devices' shares add up to the inputs\n" << r.out;
  EXPECT_EQ(count_files(out, "\\.pt$"), 6);
  const std::string alone = out + "_alone.pt";
  ASSERT_EQ(run_cli(model + " --device cpu --input " + in + "/x0.pt --output " + alone).code, 0);
  if (!torch::cuda::is_available())
    for (int i = 0; i < 6; ++i) EXPECT_TRUE(bitwise_equal(out + "/x" + std::to_string(i) + ".pt", alone)) << i;
  for (const std::string& bad : {" --device cpu,,cpu --input " + in + " --output-dir " + out,
                                 " --device cpu,cpu --input " + in + "/x0.pt"}) {
    const CliRun b = run_cli(model + bad);
    EXPECT_EQ(b.code, kExitUsage) << bad << "\n" << b.out << b.err;
  }
}

// An input in passes of one sample (as one larger than the GPU's free memory runs) gives the
// whole run's result: bitwise on the CPU, within the mode's bound on the GPU (a pass of fewer
// samples may take another kernel or tiling there); --check judges the passes' result.
TEST(Cli, InputInPassesGivesTheWholeRunsResult) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  for (const std::string& device : devices()) {
    SCOPED_TRACE(device);
    const std::string dir = fresh_dir("passes_" + device);
    const std::string args = " --device " + device + " --model " + f + "/standard_scripted.pt --input " + f + "/standard_x.pt";
    ASSERT_EQ(run_cli(args + " --output " + dir + "/whole.pt").code, 0);
    const CliRun r = run_cli(args + " --max-batch 1 --check --output " + dir + "/passes.pt");
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("in passes of 1 samples"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
    if (device == "cpu")
      EXPECT_TRUE(bitwise_equal(dir + "/passes.pt", dir + "/whole.pt"));
    else
      EXPECT_EQ(python_compare(dir + "/passes.pt", dir + "/whole.pt", 1e-5), 0);
    EXPECT_EQ(run_cli(args + " --max-batch 1 --bench 2").code, kExitUsage) << "--bench takes the input whole";
  }
}

// What the file options refuse, each as one line and exit 2; a result that cannot be put in place
// leaves nothing behind.
TEST(Cli, FileJobOptionsRefuseWhatTheyCannotDo) {
  const std::string f = FUSED3D_FIXTURE_DIR;
  const std::string model = " --device cpu --model " + f + "/standard_scripted.pt";
  const std::string x = f + "/standard_x.pt";
  for (const std::string& args : {" --input " + x + " " + x, " --input " + x + " --output-dir /tmp/o --output o.pt",
                                  " --input " + x + " --shard 2/2 --output-dir /tmp/o", " --input " + x + " --skip-existing",
                                  " --input '" + f + "/nothing*.pt' --output-dir /tmp/o",
                                  " --input " + x + " --output-dir /tmp/o --bench 3"}) {
    const CliRun r = run_cli(model + args);
    EXPECT_EQ(r.code, kExitUsage) << args << "\n" << r.out << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
  }
  const std::string dir = fresh_dir("atomic");
  shell("mkdir " + dir + "/result.pt");  // the result's name is taken by a directory: the rename fails
  const CliRun r = run_cli(model + " --input " + x + " --output " + dir + "/result.pt");
  EXPECT_EQ(r.code, kExitUsage) << r.out << r.err;
  EXPECT_EQ(count_files(dir, "tmp"), 0) << slurp_command("ls " + dir);
}

TEST(Cli, BenchPrintsTimesAndSpeedup) {
  for (const std::string& device : devices()) {
    const CliRun r = run_cli("--device " + device + " --batch 2 --bench 3");
    EXPECT_EQ(r.code, 0) << r.err;
    // The rate in the GPU's unit there, the CPU's here; host time per call only where it differs
    // from the timed call (the GPU).
    const bool cuda = device == "cuda";
    for (const char* field : {"fused", "native", "speedup", cuda ? "TFLOP/s" : "GFLOP/s", "GB/s"})
      EXPECT_NE(r.out.find(field), std::string::npos) << device << ": " << field << "\n" << r.out;
    EXPECT_EQ(r.out.find("us per fused call") != std::string::npos, cuda) << r.out;
  }
}

}  // namespace
}  // namespace fused3d::test
