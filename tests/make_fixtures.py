#!/usr/bin/env python3
"""Writes the files the C++ tests read: scripted and traced exports from tools/export_model.py,
inputs with PyTorch's own outputs, and the bad models and files the command line must refuse.

    python tests/make_fixtures.py OUT_DIR
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import export_model  # noqa: E402


def export(out, argv):
    export_model.main(["--out", out] + argv)


class ReluModel(nn.Module):
    """conv -> relu (not hardswish) -> group_norm -> mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 16, 4)
        self.group_norm = nn.GroupNorm(4, 16)

    def forward(self, x):
        return self.group_norm(F.relu(self.conv(x))).mean(dim=[2, 3, 4])


class ScaledOutput(export_model.Model):
    """The reference model with an extra op after the mean."""

    def forward(self, x):
        y = self.group_norm(F.hardswish(self.conv(x)))
        return torch.mean(y, dim=[2, 3, 4]) * 2.0


class ReflectPadded(nn.Module):
    """A Conv3d with padding_mode='reflect' pads its input with another op first."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 16, 3, padding=1, padding_mode="reflect")
        self.group_norm = nn.GroupNorm(4, 16)

    def forward(self, x):
        return self.group_norm(F.hardswish(self.conv(x))).mean(dim=[2, 3, 4])


class Conv2dModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.group_norm = nn.GroupNorm(4, 16)

    def forward(self, x):
        return self.group_norm(F.hardswish(self.conv(x))).mean(dim=[2, 3])


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    p = lambda name: os.path.join(out_dir, name)  # noqa: E731

    # The standard layer, scripted and traced, with a small input and PyTorch's output for it.
    data = ["--batch", "2", "--random-affine"]
    export(p("standard_scripted.pt"), data + ["--input-out", p("standard_x.pt"),
                                              "--reference-out", p("standard_ref.pt")])
    export(p("standard_traced.pt"), data + ["--trace"])
    # Non-default settings everywhere the file carries them.
    odd = ["--in-channels", "2", "--out-channels", "12", "--kernel-size", "3,2,5", "--groups", "3",
           "--eps", "0.001", "--no-bias", "--batch", "3", "--spatial", "5", "6", "9"]
    export(p("odd_scripted.pt"), odd + ["--input-out", p("odd_x.pt"), "--reference-out", p("odd_ref.pt")])
    export(p("odd_traced.pt"), odd + ["--trace"])
    export(p("noaffine_traced.pt"), ["--no-affine", "--trace"])
    export(p("noaffine_scripted.pt"), ["--no-affine"])
    # Settings the fused kernels refuse.
    export(p("stride2.pt"), ["--stride", "2"])
    export(p("padding1.pt"), ["--padding", "1", "--trace"])
    export(p("dilation2.pt"), ["--dilation", "2"])

    torch.manual_seed(0)
    torch.jit.script(ReluModel()).save(p("relu_model.pt"))
    torch.jit.script(ScaledOutput(3, 16, 4)).save(p("scaled_output.pt"))
    torch.jit.script(ReflectPadded()).save(p("reflect_padded.pt"))
    torch.jit.script(Conv2dModel()).save(p("conv2d_model.pt"))
    torch.jit.script(export_model.Model(3, 16, 4).double()).save(p("float64_model.pt"))

    # Inputs that do not fit the standard model, and files that are not tensors.
    torch.save(torch.rand(2, 3, 16, 32), p("rank4_x.pt"))
    torch.save(torch.randint(0, 5, (2, 3, 16, 32, 32)), p("int64_x.pt"))
    torch.save(torch.rand(2, 5, 16, 32, 32), p("channels5_x.pt"))
    torch.save(torch.rand(2, 3, 3, 32, 32), p("small_x.pt"))
    torch.save([1, 2, 3], p("list.pt"))
    with open(p("text.pt"), "w") as f:
        f.write("this is not a tensor\n")
    with open(p("standard_x.pt"), "rb") as f:
        whole = f.read()
    with open(p("truncated_x.pt"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    print(f"fixtures in {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
