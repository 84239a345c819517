"""fused3d for Python: a drop-in ModelNew for the reference model, and the operator behind it,
torch.ops.fused3d.forward, compiled by torch.utils.cpp_extension.load_inline from the same
kernels/ sources as the fused3d executable (one implementation; nothing here copies CUDA code).

    import torch
    from fused3d_torch import ModelNew          # tools/ on sys.path

    torch.manual_seed(0)
    model = ModelNew(3, 16, 4).cuda()           # same parameters as Model(3, 16, 4) after the same seed
    x = torch.rand(1024, 3, 16, 32, 32, device="cuda")
    out = model(x)                              # (1024, 16); precision="tf32" trades accuracy for speed
    fast = torch.compile(model, fullgraph=True) # no graph breaks: the op has a fake implementation

Needs only PyTorch (with its CUDA toolkit headers and nvcc). The first use builds the extension
(about a minute) into torch's extension cache; the name carries a hash of kernels/, so an edit to
the kernels rebuilds it and an unchanged tree loads the cached build.
"""
import hashlib
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.cpp_extension import load_inline

KERNELS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kernels"))
# kernels/ as two translation units, as load_inline takes them: the .cu files (device code) in
# one, the host .cpp files and the operator binding in the other; each file's internals live in a
# namespace of its own.
CUDA_UNITS = ("conv3d_depthwise.cu", "conv3d_general.cu", "conv3d_igemm.cu", "conv3d_igemm_box.cu", "conv3d_k4_mma.cu",
              "conv3d_k4_planes.cu", "device_code.cu", "epilogue.cu", "k4_sample_terms.cu")
HOST_UNITS = ("fused_forward_cuda.cpp", "plan.cpp", "tensorcore_weights.cpp", "torch_ops.cpp")

_loaded = False


def _kernel_digest():
    """A hash of kernels/ and of the architectures asked for: a build per source tree and list."""
    h = hashlib.sha256(os.environ.get("TORCH_CUDA_ARCH_LIST", "").encode() + b"\0")
    for name in sorted(os.listdir(KERNELS)):
        with open(os.path.join(KERNELS, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def _arch_flags():
    """Without TORCH_CUDA_ARCH_LIST, sm_90a on Hopper, as the executable's default build (wgmma and
    setmaxnreg exist only in the arch-specific target); with it, torch builds what it lists. Either
    way the compiled code says which kernels it can run (device_code.h)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST") or not torch.cuda.is_available():
        return []
    if torch.cuda.get_device_capability() == (9, 0):
        return ["-gencode=arch=compute_90a,code=sm_90a"]
    return []


def load_extension(verbose=False):
    """Builds (or loads from cache) the extension; registers torch.ops.fused3d.forward."""
    global _loaded
    if _loaded:
        return
    load_inline(
        name=f"fused3d_ext_{_kernel_digest()}",
        cpp_sources=["".join(f'#include "{unit}"\n' for unit in HOST_UNITS)],
        cuda_sources=["".join(f'#include "{unit}"\n' for unit in CUDA_UNITS)],
        extra_include_paths=[KERNELS],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "-lineinfo", "--expt-relaxed-constexpr"] + _arch_flags(),
        is_python_module=False,
        verbose=verbose,
    )

    @torch.library.register_fake("fused3d::forward")
    def _(x, weight, bias, gamma, beta, groups, eps, precision="accurate", stride=(1, 1, 1), padding=(0, 0, 0),
          dilation=(1, 1, 1), conv_groups=1):
        return x.new_empty((x.shape[0], weight.shape[0]))

    _loaded = True


def kernel_name(model, x):
    """Which kernel ModelNew's forward runs for x, in the words of the executable's kernel line."""
    return torch.ops.fused3d.kernel(x, model.conv.weight, model.conv.bias, model.group_norm.weight,
                                    model.group_norm.bias, model.group_norm.num_groups, model.group_norm.eps,
                                    model.precision, model.conv.stride, model.conv.padding, model.conv.dilation,
                                    model.conv.groups)


class ModelNew(nn.Module):
    """conv3d -> hardswish -> group_norm -> mean over (D, H, W), fused: a drop-in for the reference
    Model (same constructor, parameter names, shapes and initialization). CUDA inputs run the fused
    kernels; CPU inputs run PyTorch's ops. The conv settings (stride, numeric zero padding,
    dilation, conv_groups) are Conv3d's; .half() and .bfloat16() models compute in float32 and return
    their dtype."""

    def __init__(self, in_channels, out_channels, kernel_size, num_groups=4, bias=True, precision="accurate", *,
                 stride=1, padding=0, dilation=1, conv_groups=1):
        super().__init__()
        if precision not in ("accurate", "tf32"):
            raise ValueError(f"precision must be 'accurate' or 'tf32', got {precision!r}")
        if isinstance(padding, str):
            raise ValueError("padding must be numbers (zero padding), not a mode string")
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=conv_groups, bias=bias)
        self.group_norm = nn.GroupNorm(num_groups, out_channels)
        self.precision = precision
        load_extension()

    def forward(self, x):
        if not x.is_cuda:
            y = self.group_norm(F.hardswish(self.conv(x)))
            return torch.mean(y, dim=[2, 3, 4])
        return torch.ops.fused3d.forward(x, self.conv.weight, self.conv.bias, self.group_norm.weight,
                                         self.group_norm.bias, self.group_norm.num_groups,
                                         self.group_norm.eps, self.precision, self.conv.stride,
                                         self.conv.padding, self.conv.dilation, self.conv.groups)
