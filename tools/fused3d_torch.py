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
# Compiled as one CUDA translation unit (their internals live in distinct namespaces).
CUDA_UNITS = ("conv3d_hardswish_groupnorm_mean.cu", "conv3d_k4_tensorcore.cu")
BINDING = "torch_ops.cpp"

_loaded = False


def _kernel_digest():
    h = hashlib.sha256()
    for name in sorted(os.listdir(KERNELS)):
        with open(os.path.join(KERNELS, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def _arch_flags():
    """sm_90a on Hopper, as the executable's default build: the tensor-core kernel moves registers
    between its warp roles with setmaxnreg, which only the arch-specific target has. Elsewhere, or
    when TORCH_CUDA_ARCH_LIST is set, torch chooses."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST") or not torch.cuda.is_available():
        return []
    if torch.cuda.get_device_capability() == (9, 0):
        # FUSED3D_WGMMA_BUILT: the wgmma planes kernel may run (conv3d_k4_tensorcore.cu).
        return ["-gencode=arch=compute_90a,code=sm_90a", "-DFUSED3D_WGMMA_BUILT"]
    return []


def load_extension(verbose=False):
    """Builds (or loads from cache) the extension; registers torch.ops.fused3d.forward."""
    global _loaded
    if _loaded:
        return
    with open(os.path.join(KERNELS, BINDING)) as f:
        binding = f.read()
    load_inline(
        name=f"fused3d_ext_{_kernel_digest()}",
        cpp_sources=[binding],
        cuda_sources=["".join(f'#include "{unit}"\n' for unit in CUDA_UNITS)],
        extra_include_paths=[KERNELS],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "-lineinfo"] + _arch_flags(),
        is_python_module=False,
        verbose=verbose,
    )

    @torch.library.register_fake("fused3d::forward")
    def _(x, weight, bias, gamma, beta, groups, eps, precision="accurate", stride=(1, 1, 1), padding=(0, 0, 0),
          dilation=(1, 1, 1), conv_groups=1):
        return x.new_empty((x.shape[0], weight.shape[0]))

    _loaded = True


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
