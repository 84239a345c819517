#!/usr/bin/env python3
"""Writes the files the C++ tests read: scripted and traced exports from tools/export_model.py,
inputs with PyTorch's own outputs, and the bad models and files the command line must refuse.

    python tests/make_fixtures.py OUT_DIR
"""
import collections
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


class ForgedTensor:
    """Pickles as a tensor whose sizes, strides and offset are whatever we say, over `data`'s
    storage: what a corrupt or hostile .pt file declares."""

    def __init__(self, data, offset, size, stride):
        self.args = (data._typed_storage(), offset, size, stride, False, collections.OrderedDict())

    def __reduce_ex__(self, protocol):
        return (torch._utils._rebuild_tensor_v2, self.args)


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
    # Every conv setting at once: stride, zero padding, dilation, conv groups, non-cubic kernel.
    settings = ["--in-channels", "4", "--out-channels", "6", "--conv-groups", "2", "--kernel-size", "3,2,3",
                "--stride", "2,1,3", "--padding", "1,0,2", "--dilation", "1,2,1", "--groups", "3",
                "--batch", "2", "--spatial", "7", "8", "10", "--random-affine"]
    export(p("settings_scripted.pt"), settings + ["--input-out", p("settings_x.pt"),
                                                  "--reference-out", p("settings_ref.pt")])
    export(p("settings_traced.pt"), settings + ["--trace"])
    export(p("same_padding.pt"), ["--kernel-size", "3", "--padding", "same"])
    export(p("same_padding_even.pt"), ["--padding", "same"])  # kernel 4: 1 before, 2 after
    # float16 and bfloat16 models with inputs; the reference is float32 on the same values.
    for dtype, trace in (("float16", []), ("bfloat16", ["--trace"])):
        export(p(f"{dtype}_model.pt"), data + ["--dtype", dtype, "--input-out", p(f"{dtype}_x.pt"),
                                               "--reference-out", p(f"{dtype}_ref.pt")] + trace)

    torch.manual_seed(0)
    torch.jit.script(ReluModel()).save(p("relu_model.pt"))
    torch.jit.script(ScaledOutput(3, 16, 4)).save(p("scaled_output.pt"))
    torch.jit.script(ReflectPadded()).save(p("reflect_padded.pt"))
    torch.jit.script(Conv2dModel()).save(p("conv2d_model.pt"))
    torch.jit.script(export_model.Model(3, 16, 4).double()).save(p("float64_model.pt"))
    # Weights of the wrong shape: a GroupNorm weight that does not match the channels, a 4-D conv
    # weight (scripted models take whatever the attributes hold).
    wrong_gamma = export_model.Model(3, 16, 4)
    wrong_gamma.group_norm.weight = nn.Parameter(torch.ones(12))
    torch.jit.script(wrong_gamma).save(p("wrong_gamma.pt"))
    flat_weight = export_model.Model(3, 16, 4)
    flat_weight.conv.weight = nn.Parameter(torch.ones(16, 3, 4, 4))
    torch.jit.script(flat_weight).save(p("flat_conv_weight.pt"))
    # A NaN weight of output channel 5: every sample's group of channels 4-7 becomes NaN, in PyTorch
    # and in fused3d alike (a well-formed model; --check must compare NaN positions, not fail).
    nan_weight = export_model.Model(3, 16, 4)
    with torch.no_grad():
        nan_weight.conv.weight[5, 1, 2, 2, 2] = float("nan")
    torch.jit.script(nan_weight).save(p("nan_weight.pt"))

    # Inputs that do not fit the standard model, and files that are not tensors.
    torch.save(torch.rand(2, 3, 16, 32), p("rank4_x.pt"))
    torch.save(torch.randint(0, 5, (2, 3, 16, 32, 32)), p("int64_x.pt"))
    torch.save(torch.rand(2, 5, 16, 32, 32), p("channels5_x.pt"))
    torch.save(torch.rand(2, 3, 3, 32, 32), p("small_x.pt"))
    torch.save([1, 2, 3], p("list.pt"))
    with open(p("text.pt"), "w") as f:
        f.write("this is not a tensor\n")
    # Corrupt files: views that reach past their data (libtorch would read memory it does not
    # own), and a size too large for the file format's integers.
    data_of_5d = torch.rand(2 * 3 * 4 * 5 * 6)
    contiguous = (3 * 16 * 32 * 32, 16 * 32 * 32, 32 * 32, 32, 1)
    torch.save(ForgedTensor(data_of_5d, 0, (2, 3, 16, 32, 32), contiguous), p("forged_short_x.pt"))
    torch.save(ForgedTensor(data_of_5d, 0, (2 ** 30, 3, 16, 32, 32), contiguous), p("forged_huge_x.pt"))
    torch.save(ForgedTensor(data_of_5d, 10 ** 9, (2, 3, 4, 5, 6), (360, 120, 30, 6, 1)), p("forged_offset_x.pt"))
    torch.save(ForgedTensor(data_of_5d, 0, (2, 3, 4, 5, 2 ** 40), (360, 120, 30, 6, 1)), p("forged_2p40_x.pt"))
    torch.save(ForgedTensor(data_of_5d, 0, (2, 3, -4, 5, 6), (360, 120, 30, 6, 1)), p("forged_negative_x.pt"))
    with open(p("standard_x.pt"), "rb") as f:
        whole = f.read()
    with open(p("truncated_x.pt"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    print(f"fixtures in {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
