// The layer the fused kernels compute, and what they can run: the one description shared by the
// CUDA entry, the CPU path, the executable and the Python extension.
//
//   y   = conv3d(x, weight, bias)           stride, padding, dilation, conv_groups as given
//   h   = hardswish(y)
//   g   = group_norm(h, norm_groups, gamma, beta, eps)
//   out = mean(g, dims = [2, 3, 4])          -> (B, Cout)
//
// Checks return a reason (empty when fine) rather than throwing, so that each caller reports it its
// own way: the executable as a one-line user error, the kernel entries through TORCH_CHECK.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

namespace fused3d {

// How the CUDA tensor-core kernels round their operands (the CPU and general CUDA paths are float32).
//   kAccurate: <= 1e-5 relative L2 vs float64. Kernel-4x4x4 kernels: x in fp16, weights split
//              hi + lo (two MMAs), ~2e-6; the implicit-GEMM kernel: x and weights split into TF32
//              hi + lo (three MMAs), 1e-7 to 4e-6
//   kTF32:     x and weights with 11 significant bits (one MMA), PyTorch's allow_tf32 trade:
//              ~3e-4, <= 1e-3
// float16 / bfloat16 inputs on the implicit-GEMM kernel have exact products in either mode.
// (OPTIMIZATION.md 3 has the details: fp16 with per-channel weight scaling, TF32 fallback.)
enum class Precision { kAccurate, kTF32 };

struct FusedLayer {
  at::Tensor weight;  // (Cout, Cin, KD, KH, KW)
  at::Tensor bias;    // (Cout), or undefined: no bias
  at::Tensor gamma;   // (Cout), or undefined: GroupNorm without affine
  at::Tensor beta;    // (Cout), or undefined: GroupNorm without affine
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> padding{0, 0, 0};
  std::array<int64_t, 3> dilation{1, 1, 1};
  int64_t conv_groups = 1;
  int64_t norm_groups = 1;
  double eps = 1e-5;

  int64_t in_channels() const { return weight.size(1); }
  int64_t out_channels() const { return weight.size(0); }
  std::array<int64_t, 3> kernel() const { return {weight.size(2), weight.size(3), weight.size(4)}; }
};

inline std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << '(';
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << (sizes.size() == 1 ? ",)" : ")");
  return s.str();
}

// "float32", "int64": the names Python users know.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

inline std::string triple_string(const std::array<int64_t, 3>& v) {
  return shape_string(at::IntArrayRef(v.data(), v.size()));
}

// A message built only when something is wrong: the checks run on every forward call, and an
// ostringstream costs about a microsecond to construct, which B=1 (tens of microseconds) notices.
class Reason {
 public:
  template <typename T>
  Reason& operator<<(const T& v) {
    if (!stream_) stream_.emplace();
    *stream_ << v;
    return *this;
  }
  bool empty() const { return !stream_; }
  std::string str() const { return stream_ ? stream_->str() : std::string(); }

 private:
  std::optional<std::ostringstream> stream_;
};

// Whether the parameter tensors and settings are consistent with each other (a malformed model
// otherwise: PyTorch itself would refuse to run it).
inline std::string malformed_reason(const FusedLayer& l) {
  Reason why;
  if (!l.weight.defined() || l.weight.dim() != 5) {
    why << "conv weight must be 5-D (Cout, Cin/groups, KD, KH, KW), got "
        << (l.weight.defined() ? shape_string(l.weight.sizes()) : std::string("none"));
    return why.str();
  }
  const int64_t cout = l.out_channels();
  const auto expect_vector = [&](const at::Tensor& t, const char* name) {
    if (t.defined() && (t.dim() != 1 || t.size(0) != cout))
      why << name << " must have shape (" << cout << ",) to match the conv weight "
          << shape_string(l.weight.sizes()) << ", got " << shape_string(t.sizes());
  };
  const auto positive = [](const std::array<int64_t, 3>& v, int64_t least) {
    return v[0] >= least && v[1] >= least && v[2] >= least;
  };
  expect_vector(l.bias, "conv bias");
  if (why.empty()) expect_vector(l.gamma, "group_norm weight");
  if (why.empty()) expect_vector(l.beta, "group_norm bias");
  if (why.empty() && l.gamma.defined() != l.beta.defined())
    why << "group_norm has a weight but no bias (or the reverse)";
  if (why.empty() && (l.norm_groups < 1 || cout % l.norm_groups != 0))
    why << "group_norm groups (" << l.norm_groups << ") must divide the " << cout
        << " output channels";
  if (why.empty() && !(l.eps >= 0.0)) why << "group_norm eps must be >= 0, got " << l.eps;
  if (why.empty() && (l.conv_groups < 1 || cout % l.conv_groups != 0))
    why << "conv groups (" << l.conv_groups << ") must divide the " << cout << " output channels";
  if (why.empty() && !positive(l.stride, 1))
    why << "conv stride must be >= 1, got " << triple_string(l.stride);
  if (why.empty() && !positive(l.padding, 0))
    why << "conv padding must be >= 0, got " << triple_string(l.padding);
  if (why.empty() && !positive(l.dilation, 1))
    why << "conv dilation must be >= 1, got " << triple_string(l.dilation);
  if (why.empty() && (l.weight.size(1) < 1 || !positive(l.kernel(), 1)))
    why << "conv weight " << shape_string(l.weight.sizes()) << " is empty";
  return why.str();
}

// The dtypes the fused kernels take: float32, and float16 / bfloat16 with float32 arithmetic.
inline bool fused_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

// Whether the fused kernels implement this layer (it is assumed well formed). Every conv setting
// PyTorch's zero-padded Conv3d has is implemented; what is left is other dtypes (and, checked at
// the CUDA entry, one sample of 2^31 elements or more: per-sample offsets are 32-bit).
inline std::string unsupported_reason(const FusedLayer& l) {
  Reason why;
  const at::ScalarType dtype = l.weight.scalar_type();
  if (!fused_dtype(dtype))
    why << "model dtype " << dtype_name(dtype)
        << " is not supported (fused kernels: float32, float16, bfloat16)";
  for (const at::Tensor* t : {&l.bias, &l.gamma, &l.beta})
    if (why.empty() && t->defined() && t->scalar_type() != dtype)
      why << "model parameter dtype " << dtype_name(t->scalar_type()) << " differs from the conv weight's "
          << dtype_name(dtype) << " (not supported)";
  return why.str();
}

// A parameter as contiguous float32 (undefined stays undefined). No dispatcher call when it already
// is one: the CUDA entry runs this per forward, and B=1 is bound by host time.
inline at::Tensor as_float32(const at::Tensor& t) {
  if (!t.defined()) return t;
  return t.scalar_type() == at::kFloat ? t.contiguous() : t.to(at::kFloat).contiguous();
}

// Stride 1, no padding, dilation 1, one conv group, float32: what the tensor-core path assumes.
inline bool is_plain_float32_conv(const FusedLayer& l) {
  const auto all = [](const std::array<int64_t, 3>& v, int64_t x) { return v[0] == x && v[1] == x && v[2] == x; };
  return all(l.stride, 1) && all(l.padding, 0) && all(l.dilation, 1) && l.conv_groups == 1 &&
         l.weight.scalar_type() == at::kFloat;
}

// Whether x is an input this layer can take: rank, dtype, channels, spatial size vs kernel.
inline std::string input_mismatch_reason(const at::Tensor& x, const FusedLayer& l) {
  Reason why;
  if (x.dim() != 5) {
    why << "input must be 5-D (B, C, D, H, W), got shape " << shape_string(x.sizes());
  } else if (x.scalar_type() != l.weight.scalar_type()) {
    why << "input dtype " << dtype_name(x.scalar_type()) << " does not match the model dtype "
        << dtype_name(l.weight.scalar_type());
  } else if (x.size(1) != l.in_channels() * l.conv_groups) {
    why << "input has " << x.size(1) << " channels, the model expects "
        << l.in_channels() * l.conv_groups << " (input shape " << shape_string(x.sizes()) << ")";
  } else {
    const auto k = l.kernel();
    for (int a = 0; a < 3; ++a) {
      const int64_t padded = x.size(2 + a) + 2 * l.padding[a];
      const int64_t reach = l.dilation[a] * (k[a] - 1) + 1;
      if (padded < reach) {
        why << "input spatial size " << shape_string(x.sizes().slice(2))
            << " is smaller than the conv kernel " << triple_string(k) << " along axis " << a;
        if (reach != k[a] || l.padding[a] != 0)
          why << " (kernel reach " << reach << " with dilation " << l.dilation[a] << ", input "
              << padded << " with padding " << l.padding[a] << ")";
        break;
      }
    }
  }
  return why.str();
}

// Output spatial extent along one axis.
inline int64_t conv_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

// (OD, OH, OW) for an input that passed input_mismatch_reason.
inline std::array<int64_t, 3> conv_output_spatial(const at::Tensor& x, const FusedLayer& l) {
  const auto k = l.kernel();
  std::array<int64_t, 3> o{};
  for (int a = 0; a < 3; ++a) o[a] = conv_output_size(x.size(2 + a), k[a], l.stride[a], l.padding[a], l.dilation[a]);
  return o;
}

// x's spatial extents, the output's, and the conv settings, as the kernels take them: 32-bit
// (offsets within one sample are 32-bit; the entry checks Cin*D*H*W < 2^31).
struct ConvSpatial {
  int d, h, w;     // input extent
  int od, oh, ow;  // output extent
  int kd, kh, kw;  // kernel
  int sd, sh, sw;  // stride
  int pd, ph, pw;  // zero padding
  int dd, dh, dw;  // dilation
};

inline ConvSpatial conv_spatial(const at::Tensor& x, const FusedLayer& l) {
  const auto k = l.kernel();
  const auto o = conv_output_spatial(x, l);
  const auto narrow = [](int64_t v) { return static_cast<int>(v); };
  return {narrow(x.size(2)),     narrow(x.size(3)),     narrow(x.size(4)),     narrow(o[0]),          narrow(o[1]),
          narrow(o[2]),          narrow(k[0]),          narrow(k[1]),          narrow(k[2]),          narrow(l.stride[0]),
          narrow(l.stride[1]),   narrow(l.stride[2]),   narrow(l.padding[0]),  narrow(l.padding[1]),  narrow(l.padding[2]),
          narrow(l.dilation[0]), narrow(l.dilation[1]), narrow(l.dilation[2])};
}

// What every fused entry checks before it computes: the layer is well formed and supported, x
// fits it, and x and the layer's weights live on `device`. Empty when fine.
inline std::string forward_reason(const at::Tensor& x, const FusedLayer& l, const at::Device& device) {
  std::string why = malformed_reason(l);
  if (why.empty()) why = unsupported_reason(l);
  if (why.empty()) why = input_mismatch_reason(x, l);
  if (why.empty() && (x.device() != device || l.weight.device() != device)) {
    Reason where;
    where << "input and weights must be on " << device << ", got " << x.device() << " and " << l.weight.device();
    why = where.str();
  }
  return why;
}

// Whether `out` can take the result for x: a contiguous (B, Cout) tensor of x's dtype on x's device.
inline std::string out_mismatch_reason(const at::Tensor& out, const at::Tensor& x, const FusedLayer& l) {
  Reason why;
  const int64_t batch = x.size(0), cout = l.out_channels();
  if (!(out.is_contiguous() && out.device() == x.device() && out.scalar_type() == x.scalar_type() &&
        out.sizes() == at::IntArrayRef({batch, cout})))
    why << "out must be a contiguous " << dtype_name(x.scalar_type()) << " (" << batch << ", " << cout
        << ") tensor on " << x.device() << ", got " << shape_string(out.sizes()) << " "
        << dtype_name(out.scalar_type()) << " on " << out.device();
  return why.str();
}

// The CUDA pipeline (fused_forward_cuda.cu). The _out form writes every element of a caller's
// (B, Cout) tensor of the input's dtype, so callers can poison it first.
at::Tensor fused_forward_cuda(const at::Tensor& x, const FusedLayer& layer, Precision precision);
void fused_forward_cuda_out(const at::Tensor& x, const FusedLayer& layer, Precision precision, at::Tensor& out);

}  // namespace fused3d
