// TorchScript model -> FusedLayer.
//
// Scripted and traced exports look different (scripted modules keep Conv3d's settings as class
// constants and call F.conv3d; traced ones record aten::_convolution with literal arguments), but
// once the module is frozen both become one graph in which every parameter and setting is a
// constant input of the op that uses it. So we freeze, then find the four ops and read their
// constant inputs. The data flow is checked too: x -> conv -> hardswish -> group_norm -> mean ->
// return, with nothing else reading or changing the intermediate tensors except shape queries.
#include "fused3d/errors.h"
#include "fused3d/model.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

namespace fused3d {
namespace {

using torch::jit::Node;
using torch::jit::Value;

const char* const kExpected = "expected conv3d -> hardswish -> group_norm -> mean(dims 2, 3, 4)";

const std::set<std::string> kConvOps = {"aten::conv3d", "aten::_convolution", "aten::convolution"};
const std::set<std::string> kHardswishOps = {"aten::hardswish", "aten::hardswish_"};
const std::set<std::string> kGroupNormOps = {"aten::group_norm"};
const std::set<std::string> kMeanOps = {"aten::mean"};
// Ops that may read an intermediate tensor without changing the result (shape checks that
// F.group_norm and friends make in scripted code).
const std::set<std::string> kShapeQueries = {"aten::dim", "aten::size", "aten::len",
                                             "prim::device", "prim::dtype", "aten::numel"};

std::string op_name(const Node* node) { return node->kind().toQualString(); }

void collect(torch::jit::Block* block, const std::set<std::string>& kinds, std::vector<Node*>& out) {
  for (Node* node : block->nodes()) {
    if (kinds.count(op_name(node))) out.push_back(node);
    for (torch::jit::Block* inner : node->blocks()) collect(inner, kinds, out);
  }
}

class GraphReader {
 public:
  GraphReader(torch::jit::Graph& graph, std::string path) : graph_(graph), path_(std::move(path)) {}

  Node* single(const std::set<std::string>& kinds, const char* what) {
    std::vector<Node*> found;
    collect(graph_.block(), kinds, found);
    if (found.empty()) fail(std::string("has no ") + what + "; " + kExpected);
    if (found.size() > 1)
      fail("has " + std::to_string(found.size()) + " " + what + " ops; " + kExpected);
    if (found[0]->owningBlock() != graph_.block()) fail(std::string(what) + " sits inside control flow");
    return found[0];
  }

  c10::IValue constant(const Node* node, size_t input, const char* what) {
    const auto value = torch::jit::toIValue(node->input(input));
    if (!value) fail(std::string(what) + " is not a constant in the frozen graph");
    return *value;
  }

  std::array<int64_t, 3> triple(const Node* node, size_t input, const char* what) {
    const c10::IValue v = constant(node, input, what);
    if (!v.isIntList()) fail(std::string(what) + " is not a list of ints");
    std::vector<int64_t> list = v.toIntVector();
    if (list.size() == 1) list.assign(3, list[0]);
    if (list.size() != 3)
      fail(std::string(what) + " has " + std::to_string(list.size()) + " entries, expected 3");
    return {list[0], list[1], list[2]};
  }

  at::Tensor optional_tensor(const Node* node, size_t input, const char* what) {
    const c10::IValue v = constant(node, input, what);
    if (v.isNone()) return at::Tensor();
    if (!v.isTensor()) fail(std::string(what) + " is not a tensor");
    return v.toTensor();
  }

  // `consumer` must be the only op that uses `value`, shape queries aside.
  void expect_only_consumer(const Value* value, const Node* consumer, const char* value_name) {
    for (const torch::jit::Use& use : value->uses()) {
      if (use.user == consumer || kShapeQueries.count(op_name(use.user))) continue;
      fail("applies " + op_name(use.user) + " to the " + value_name + "; " + kExpected);
    }
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError("model '" + path_ + "' " + what);
  }

 private:
  torch::jit::Graph& graph_;
  std::string path_;
};

void read_conv(GraphReader& g, const Node* conv, FusedLayer& layer) {
  const std::string kind = op_name(conv);
  at::Tensor weight = g.optional_tensor(conv, 1, "conv weight");
  if (!weight.defined()) g.fail("conv has no weight");
  layer.weight = weight;
  layer.bias = g.optional_tensor(conv, 2, "conv bias");
  layer.stride = g.triple(conv, 3, "conv stride");
  layer.dilation = g.triple(conv, 5, "conv dilation");
  const c10::IValue padding = g.constant(conv, 4, "conv padding");
  if (padding.isString()) {
    // aten::conv3d.padding takes "valid" (none) or "same": dilation * (k - 1) in all, half on each
    // side, the odd one on the far side (which zero padding on both sides cannot express).
    const std::string mode = padding.toStringRef();
    if (mode != "valid" && mode != "same") g.fail("uses conv padding '" + mode + "', which is not supported");
    for (int a = 0; a < 3; ++a) {
      const int64_t total = mode == "same" ? layer.dilation[a] * (layer.weight.size(2 + a) - 1) : 0;
      if (total % 2 != 0)
        g.fail("uses conv padding 'same' with an even kernel extent along axis " + std::to_string(a) +
               ", which pads one side more than the other (not supported; give the padding as numbers)");
      layer.padding[a] = total / 2;
    }
  } else {
    layer.padding = g.triple(conv, 4, "conv padding");
  }
  if (kind == "aten::conv3d") {
    layer.conv_groups = g.constant(conv, 6, "conv groups").toInt();
  } else {  // _convolution / convolution: (..., dilation, transposed, output_padding, groups, ...)
    if (g.constant(conv, 6, "conv transposed").toBool())
      g.fail("uses a transposed convolution; " + std::string(kExpected));
    layer.conv_groups = g.constant(conv, 8, "conv groups").toInt();
  }
}

void read_group_norm(GraphReader& g, const Node* norm, FusedLayer& layer) {
  layer.norm_groups = g.constant(norm, 1, "group_norm num_groups").toInt();
  layer.gamma = g.optional_tensor(norm, 2, "group_norm weight");
  layer.beta = g.optional_tensor(norm, 3, "group_norm bias");
  layer.eps = g.constant(norm, 4, "group_norm eps").toDouble();
}

void check_mean(GraphReader& g, const Node* mean) {
  if (mean->inputs().size() != 4) g.fail("takes a mean over all elements; " + std::string(kExpected));
  const c10::IValue dims = g.constant(mean, 1, "mean dims");
  std::vector<int64_t> d = dims.isIntList() ? dims.toIntVector() : std::vector<int64_t>{};
  for (int64_t& v : d) v = v < 0 ? v + 5 : v;
  std::sort(d.begin(), d.end());
  if (d != std::vector<int64_t>{2, 3, 4}) g.fail("takes the mean over other dims; " + std::string(kExpected));
  if (g.constant(mean, 2, "mean keepdim").toBool())
    g.fail("takes the mean with keepdim=True, which is not supported (output is (B, C))");
  if (!g.constant(mean, 3, "mean dtype").isNone())
    g.fail("takes the mean with a dtype argument, which is not supported");
}

FusedLayer layer_from_graph(torch::jit::Graph& graph, const std::string& path) {
  GraphReader g(graph, path);
  if (graph.inputs().size() != 2) g.fail("forward() must take exactly one tensor");
  Node* conv = g.single(kConvOps, "convolution");
  Node* act = g.single(kHardswishOps, "hardswish");
  Node* norm = g.single(kGroupNormOps, "group_norm");
  Node* mean = g.single(kMeanOps, "mean");

  if (conv->input(0) != graph.inputs()[1])
    g.fail("does not apply the convolution to its input directly (padding_mode other than "
           "'zeros', or another op first); " + std::string(kExpected));
  if (act->input(0) != conv->output()) g.fail("does not apply hardswish to the conv output; " + std::string(kExpected));
  if (norm->input(0) != act->output()) g.fail("does not apply group_norm to the hardswish output; " + std::string(kExpected));
  if (mean->input(0) != norm->output()) g.fail("does not take the mean of the group_norm output; " + std::string(kExpected));
  if (graph.outputs().size() != 1 || graph.outputs()[0] != mean->output())
    g.fail("returns something other than the mean; " + std::string(kExpected));
  g.expect_only_consumer(conv->output(), act, "conv output");
  g.expect_only_consumer(act->output(), norm, "hardswish output");
  g.expect_only_consumer(norm->output(), mean, "group_norm output");

  FusedLayer layer;
  read_conv(g, conv, layer);
  read_group_norm(g, norm, layer);
  check_mean(g, mean);
  const std::string malformed = malformed_reason(layer);
  if (!malformed.empty()) g.fail("is malformed: " + malformed);
  return layer;
}

}  // namespace

Model load_model(const std::string& path) {
  if (!std::ifstream(path, std::ios::binary).good())
    throw InputError("cannot open model file '" + path + "'");
  torch::jit::Module frozen;
  try {
    torch::jit::Module module = torch::jit::load(path, torch::kCPU);
    module.eval();
    frozen = torch::jit::freeze(module);
  } catch (const c10::Error& e) {
    throw InputError("'" + path + "' is not a TorchScript model (torch.jit.script or trace, then save): " +
                     first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw InputError("'" + path + "' is not a TorchScript model: " + first_line(e.what()));
  }
  if (!frozen.find_method("forward")) throw InputError("model '" + path + "' has no forward()");
  return {layer_from_graph(*frozen.get_method("forward").graph(), path), path};
}

Model default_model(at::Generator& generator) {
  constexpr int64_t kIn = 3, kOut = 16, kKernel = 4, kGroups = 4;
  FusedLayer layer;
  const double fan_in = kIn * kKernel * kKernel * kKernel;
  // nn.Conv3d.reset_parameters: kaiming_uniform_(a=sqrt(5)) for the weight, then U(+-1/sqrt(fan_in))
  // for the bias; the same double arithmetic as torch.nn.init so the bounds match to the bit.
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const double weight_bound = std::sqrt(3.0) * (gain / std::sqrt(fan_in));
  const double bias_bound = 1.0 / std::sqrt(fan_in);
  layer.weight = at::empty({kOut, kIn, kKernel, kKernel, kKernel}).uniform_(-weight_bound, weight_bound, generator);
  layer.bias = at::empty({kOut}).uniform_(-bias_bound, bias_bound, generator);
  layer.gamma = at::ones({kOut});
  layer.beta = at::zeros({kOut});
  layer.norm_groups = kGroups;
  layer.eps = 1e-5;
  return {layer, "embedded default"};
}

at::Tensor default_input(const FusedLayer& layer, int64_t batch, at::Generator& generator) {
  return at::rand({batch, layer.in_channels() * layer.conv_groups, 16, 32, 32}, generator);
}

FusedLayer layer_to(const FusedLayer& layer, at::Device device, at::ScalarType dtype) {
  FusedLayer out = layer;
  for (at::Tensor* t : {&out.weight, &out.bias, &out.gamma, &out.beta})
    if (t->defined()) *t = t->to(device, dtype);
  return out;
}

std::string describe(const FusedLayer& l) {
  std::ostringstream s;
  s << "Conv3d(" << l.in_channels() * l.conv_groups << " -> " << l.out_channels() << ", kernel "
    << triple_string(l.kernel()) << (l.bias.defined() ? "" : ", no bias") << ") -> HardSwish -> GroupNorm("
    << l.norm_groups << " groups, eps " << l.eps << (l.gamma.defined() ? "" : ", no affine")
    << ") -> mean over (D, H, W)";
  return s.str();
}

}  // namespace fused3d
