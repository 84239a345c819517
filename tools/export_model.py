#!/usr/bin/env python3
"""Export the reference model as TorchScript for fused3d, and optionally an input and the output
PyTorch computes for it, so the C++ result can be checked from Python.

    python tools/export_model.py --out model.pt                       # scripted, standard layer
    python tools/export_model.py --out model.pt --trace --batch 16 \\
        --input-out x.pt --reference-out ref.pt                       # traced, with data

The model (the request's semantics): Conv3d -> HardSwish -> GroupNorm -> mean over (D, H, W).
Parameters are PyTorch's default init after torch.manual_seed(seed), so `--seed 0` gives the same
weights as fused3d's embedded default; the input is then drawn with torch.rand from the same stream.
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """conv3d -> hardswish -> group_norm -> mean(dims 2, 3, 4): (B, Cin, D, H, W) -> (B, Cout)."""

    def __init__(self, in_channels, out_channels, kernel_size, num_groups=4, bias=True,
                 stride=1, padding=0, dilation=1, eps=1e-5, affine=True, conv_groups=1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=conv_groups, bias=bias)
        self.group_norm = nn.GroupNorm(num_groups, out_channels, eps=eps, affine=affine)

    def forward(self, x):
        x = self.conv(x)
        x = F.hardswish(x)
        x = self.group_norm(x)
        return torch.mean(x, dim=[2, 3, 4])


def int_or_triple(text):
    parts = [int(p) for p in text.split(",")]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected N or N,N,N, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def padding_arg(text):
    """N, N,N,N, or PyTorch's 'same' / 'valid'."""
    return text if text in ("same", "valid") else int_or_triple(text)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="TorchScript file to write")
    p.add_argument("--trace", action="store_true", help="torch.jit.trace instead of torch.jit.script")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--out-channels", type=int, default=16)
    p.add_argument("--kernel-size", type=int_or_triple, default=4, help="N or KD,KH,KW")
    p.add_argument("--groups", type=int, default=4, help="GroupNorm groups")
    p.add_argument("--no-bias", action="store_true", help="conv without bias")
    p.add_argument("--no-affine", action="store_true", help="GroupNorm without weight and bias")
    p.add_argument("--random-affine", action="store_true",
                   help="draw GroupNorm weight and bias at random (tests exercise the affine terms)")
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--stride", type=int_or_triple, default=1)
    p.add_argument("--padding", type=padding_arg, default=0, help="N, N,N,N, same or valid")
    p.add_argument("--dilation", type=int_or_triple, default=1)
    p.add_argument("--conv-groups", type=int, default=1, help="Conv3d groups")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="model and input dtype; the reference is then PyTorch's float32 output on the same values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1024, help="batch of the input written by --input-out")
    p.add_argument("--spatial", type=int, nargs=3, default=[16, 32, 32], metavar=("D", "H", "W"))
    p.add_argument("--input-out", help="also write a torch.rand input of shape (batch, Cin, D, H, W)")
    p.add_argument("--reference-out", help="also write PyTorch's float32 output for that input")
    return p.parse_args(argv)


def build(args):
    """The model and the input, drawn in that order from torch.manual_seed(args.seed)."""
    torch.manual_seed(args.seed)
    model = Model(args.in_channels, args.out_channels, args.kernel_size, args.groups,
                  bias=not args.no_bias, stride=args.stride, padding=args.padding,
                  dilation=args.dilation, eps=args.eps, affine=not args.no_affine,
                  conv_groups=args.conv_groups).eval()
    x = torch.rand(args.batch, args.in_channels, *args.spatial)
    if args.random_affine and not args.no_affine:
        with torch.no_grad():
            model.group_norm.weight.uniform_(0.5, 1.5)
            model.group_norm.bias.uniform_(-0.5, 0.5)
    dtype = DTYPES[args.dtype]
    return model.to(dtype), x.to(dtype)


def main(argv=None):
    args = parse_args(argv)
    model, x = build(args)
    scripted = torch.jit.trace(model, x[:1]) if args.trace else torch.jit.script(model)
    scripted.save(args.out)
    print(f"wrote {args.out} ({'traced' if args.trace else 'scripted'})")
    if args.input_out:
        torch.save(x, args.input_out)
        print(f"wrote {args.input_out} {tuple(x.shape)}")
    if args.reference_out:
        # float16 / bfloat16: PyTorch's float32 result on the same (rounded) values, the reference
        # fused3d's float32 arithmetic is held to (PyTorch in float16 rounds every intermediate).
        with torch.no_grad():
            torch.save(model.float()(x.float()) if x.dtype != torch.float32 else model(x), args.reference_out)
        print(f"wrote {args.reference_out}")


if __name__ == "__main__":
    main()
