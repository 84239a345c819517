// make_plan: which kernel runs a layer on the GPU, from what each kernel says it can take. The
// kernel-4x4x4 tensor-core kernels take the layers they are specialized for (16 output channels,
// float32; OPTIMIZATION.md 4.6 says when each runs and why); on GPUs with TF32 tensor cores (sm_80
// on) the depthwise kernel the layers with one input channel per conv group, whose GEMM would be
// mostly padding, the box implicit-GEMM kernel every other float32 layer whose footprints fit, and
// the implicit-GEMM kernel the rest; the general kernel every layer on older GPUs.
#include "plan.h"

#include "conv3d_depthwise.h"
#include "conv3d_general.h"
#include "conv3d_igemm.h"
#include "conv3d_igemm_box.h"
#include "conv3d_k4_mma.h"
#include "conv3d_k4_planes.h"
#include "device_code.h"

#include <cstdlib>
#include <cstring>

namespace fused3d {

namespace {

constexpr KernelKind kKernels[] = {KernelKind::kGeneral, KernelKind::kIgemm, KernelKind::kIgemmBox,
                                   KernelKind::kDepthwise, KernelKind::kK4Mma, KernelKind::kK4Planes};

bool can_take(KernelKind kernel, const FusedLayer& layer, const at::Tensor& x, Precision precision) {
  switch (kernel) {
    case KernelKind::kGeneral: return true;
    case KernelKind::kIgemm: return igemm::can_run(x);
    case KernelKind::kIgemmBox: return igemm_box::can_run(x, layer);
    case KernelKind::kDepthwise: return igemm::can_run(x) && depthwise::can_run(x, layer);
    case KernelKind::kK4Mma: return k4_mma::can_run(layer, x, precision);
    case KernelKind::kK4Planes: return k4_mma::can_run(layer, x, precision) && k4_planes::can_run(x);
  }
  return false;
}

// The fastest kernel that takes the layer (OPTIMIZATION.md 4.6).
KernelKind fastest(const FusedLayer& layer, const at::Tensor& x, Precision precision) {
  for (const KernelKind kernel : {KernelKind::kK4Planes, KernelKind::kK4Mma, KernelKind::kDepthwise,
                                  KernelKind::kIgemmBox, KernelKind::kIgemm})
    if (can_take(kernel, layer, x, precision)) return kernel;
  return KernelKind::kGeneral;
}

KernelKind requested_or_fastest(const FusedLayer& layer, const at::Tensor& x, Precision precision) {
  const char* name = std::getenv("FUSED3D_KERNEL");
  if (name == nullptr || *name == '\0') return fastest(layer, x, precision);
  for (const KernelKind kernel : kKernels)
    if (std::strcmp(name, kernel_id(kernel)) == 0) {
      TORCH_CHECK(can_take(kernel, layer, x, precision), "fused3d: FUSED3D_KERNEL=", name,
                  " cannot take this layer and input (", shape_string(x.sizes()), " ", dtype_name(x.scalar_type()), ")");
      return kernel;
    }
  TORCH_CHECK(false, "fused3d: FUSED3D_KERNEL=", name,
              " names no kernel (general, igemm, igemm-box, depthwise, k4-mma, k4-planes)");
}

}  // namespace

Plan make_plan(const FusedLayer& layer, const at::Tensor& x, Precision precision) {
  Plan plan;
  plan.precision = precision;
  plan.kernel = requested_or_fastest(layer, x, precision);
  switch (plan.kernel) {
    case KernelKind::kK4Planes:
      plan.tiles = k4_planes::tiles(x);
      plan.shared_bytes = k4_planes::shared_bytes(precision);
      break;
    case KernelKind::kK4Mma:
      plan.tiles = k4_mma::tiles(x);
      plan.shared_bytes = k4_mma::shared_bytes(x);
      plan.epilogue_in_kernel = k4_mma::runs_epilogue(x.size(0));
      break;
    case KernelKind::kDepthwise: plan.tiles = depthwise::tiles(x, layer); break;
    case KernelKind::kIgemmBox:
      plan.tiles = igemm_box::tiles(x, layer);
      plan.shared_bytes = igemm_box::shared_bytes(igemm_box::tiling(x, layer));
      plan.wgmma = device_code(x.device().index()).wgmma &&
                   igemm_box::Traits::uses_wgmma(igemm::n_tiles_for(layer.out_channels() / layer.conv_groups));
      break;
    case KernelKind::kIgemm: plan.tiles = igemm::tiles(x, layer); break;
    case KernelKind::kGeneral: plan.tiles = general::tiles(x, layer); break;
  }
  return plan;
}

const char* kernel_id(KernelKind kernel) {
  switch (kernel) {
    case KernelKind::kGeneral: return "general";
    case KernelKind::kIgemm: return "igemm";
    case KernelKind::kIgemmBox: return "igemm-box";
    case KernelKind::kDepthwise: return "depthwise";
    case KernelKind::kK4Mma: return "k4-mma";
    case KernelKind::kK4Planes: return "k4-planes";
  }
  return "unknown";
}

std::string describe(const Plan& plan, at::ScalarType dtype) {
  std::string text = kernel_id(plan.kernel);
  if (plan.kernel == KernelKind::kGeneral)
    return text + (dtype == at::kFloat ? " (float32 on CUDA cores)"
                                       : " (" + dtype_name(dtype) + " in, float32 on CUDA cores)");
  if (plan.kernel == KernelKind::kDepthwise)
    return text + (dtype == at::kFloat ? " (float32 on CUDA cores, input tiles in shared memory)"
                                       : " (" + dtype_name(dtype) + " in, float32 on CUDA cores, input tiles in shared memory)");
  if (plan.kernel == KernelKind::kIgemmBox)
    return text + " (tensor cores, " + (plan.wgmma ? "wgmma" : "mma.sync") + " implicit GEMM, input boxes in shared memory; " +
           (igemm::splits(dtype, plan.precision) ? "accurate: x and weights split hi+lo TF32, 3 products"
                                                  : "tf32: x and weights rounded to TF32") +
           ")";
  if (plan.kernel == KernelKind::kIgemm) {
    if (dtype != at::kFloat)
      return text + " (tensor cores, mma.sync implicit GEMM; " + dtype_name(dtype) + " MMAs on x as it is, exact products)";
    return text + " (tensor cores, mma.sync implicit GEMM; " +
           (igemm::splits(dtype, plan.precision) ? "accurate: x and weights split hi+lo TF32, 3 products"
                                                  : "tf32: x and weights rounded to TF32") +
           ")";
  }
  text += plan.kernel == KernelKind::kK4Planes ? " (tensor cores, wgmma" : " (tensor cores, mma.sync";
  text += plan.precision == Precision::kAccurate ? "; accurate: x fp16, weights split hi+lo fp16"
                                                 : "; tf32: x and weights fp16, 11 significant bits as TF32";
  text += "; TF32 where x is out of fp16 range";
  if (plan.epilogue_in_kernel) text += "; epilogue in the same kernel";
  return text + ")";
}

}  // namespace fused3d
