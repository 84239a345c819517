#!/usr/bin/env python3
"""What operand rounding alone does to a layer's output: each tensor-core route's rounding of x and
the weights, emulated on the CPU (products exact, sums in float64), then bias, hardswish, GroupNorm
and the spatial mean in float64, against the same pipeline on the unrounded values. The relative L2
error of the (B, Cout) output is what the GPU measures less the float32 sums' ~1e-7, so a rounding
scheme can be judged before a kernel is written for it, over inputs no GPU test has to foresee.

Routes (OPTIMIZATION.md 3 describes them):
    split3       the implicit-GEMM kernels' accurate mode: x = hi + lo and w = hi + lo, TF32 parts
                 (hi truncated, lo rounded), three products (lo x lo dropped)
    tf32         their tf32 mode: x and w rounded to TF32 (nearest, ties away, as cvt.rna)
    k4-accurate  the kernel-4x4x4 kernels' accurate mode: x - p rounded to fp16 (p = x[n, c, 0, 0, 0],
                 its contribution added back exactly), w scaled per output channel into [1, 2) and
                 split into two fp16 parts
    k4-tf32      the same with w in one fp16 part
    pivot-tf32   a candidate, not a kernel: x - p rounded once to TF32 (p itself TF32-rounded, so
                 exact), w split in two TF32 parts: two products
Padding is zeros in x, so -p in x - p (the pivot's algebra holds there too).

Inputs: continuous ones (uniform, normal, on an offset, on an offset with a spread below fp16's
spacing) and ones with few distinct values (masks, tenths, bytes / 255), whose rounding errors are
the same wherever a value recurs and so do not average out over the spatial mean.

    python3 tools/precision_model.py                       # the standard layer, every route
    python3 tools/precision_model.py --cin 16 --cout 64 --kernel 3 --padding 1 --spatial 16 64 64 \
        --groups 16 --batch 2 --routes split3,tf32
"""
import argparse
import math

import torch
import torch.nn.functional as F

BOUND = {"split3": 1e-5, "tf32": 1e-3, "k4-accurate": 1e-5, "k4-tf32": 1e-3, "pivot-tf32": 1e-5}


def round_tf32(t):
    """TF32 as the kernels round (cvt.rna: nearest, ties away from zero), as float64."""
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32).double()


def truncate_tf32(t):
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    return (bits & ~0x1FFF).view(torch.float32).double()


def k4_weights(w, parts):
    """fp16 weights as tensorcore_weights.cpp packs them: per output channel a power of two puts
    max|w| in [1, 2), then one or two fp16 parts (round to nearest even), scaled back."""
    max_abs = w.abs().amax(dim=(1, 2, 3, 4), keepdim=True)
    scale = torch.where(max_abs > 0, torch.exp2(-torch.floor(torch.log2(max_abs))), torch.ones_like(max_abs))
    scaled = (w * scale).float()
    hi = scaled.half().double()
    total = hi
    if parts == 2:
        total = hi + (scaled.double() - hi).float().half().double()
    return total / scale.double()


def conv_output(x, w, route, padding, conv_groups):
    """conv3d (no bias) of x and w with the route's operands, in float64."""
    if route == "exact":
        return F.conv3d(x.double(), w.double(), padding=padding, groups=conv_groups)
    if route == "split3":
        xh, wh = truncate_tf32(x), truncate_tf32(w)
        xl, wl = round_tf32(x.double() - xh), round_tf32(w.double() - wh)
        return sum(F.conv3d(a, b, padding=padding, groups=conv_groups) for a, b in ((xl, wh), (xh, wl), (xh, wh)))
    if route == "tf32":
        return F.conv3d(round_tf32(x), round_tf32(w), padding=padding, groups=conv_groups)
    # Pivot routes: p per (sample, channel), x - p rounded (float32 subtraction, as the producers do).
    v = x[:, :, 0, 0, 0]
    pivot = torch.where(torch.isfinite(v), v, torch.zeros_like(v)).double()
    if route == "pivot-tf32":
        pivot = round_tf32(pivot)
    padded = F.pad(x, [p for p in reversed(padding) for _ in range(2)])
    shifted = (padded.double() - pivot[:, :, None, None, None]).float()
    if route == "pivot-tf32":
        rounded = round_tf32(shifted)
        wk = truncate_tf32(w) + round_tf32(w.double() - truncate_tf32(w))
    else:
        # fp16's range: an item out of it takes the TF32 route (x - p to TF32), here per sample.
        level = shifted.abs().amax(dim=(1, 2, 3, 4))
        out_of_range = (level > 65504) | (level < 2 ** -10)
        rounded = torch.where(out_of_range[:, None, None, None, None], round_tf32(shifted), shifted.half().double())
        wk = k4_weights(w.double(), 2 if route == "k4-accurate" else 1)
    out = F.conv3d(rounded, wk, groups=conv_groups)
    cin_g = w.shape[1]
    sums = w.double().sum(dim=(2, 3, 4))  # (Cout, Cin/G): the pivots' exact contribution
    cout_g = w.shape[0] // conv_groups
    terms = torch.stack([pivot[:, (o // cout_g) * cin_g:(o // cout_g + 1) * cin_g] @ sums[o] for o in range(w.shape[0])], 1)
    return out + terms[:, :, None, None, None]


def forward(x, layer, route):
    w, b, gamma, beta, groups, padding, conv_groups = layer
    y = conv_output(x, w, route, padding, conv_groups) + b.double().view(1, -1, 1, 1, 1)
    y = F.group_norm(F.hardswish(y), groups, gamma.double(), beta.double(), 1e-5)
    return y.mean(dim=(2, 3, 4))


def random_layer(a, gen):
    k = a.kernel
    fan = a.cin // a.conv_groups * k[0] * k[1] * k[2]
    bound = 1 / math.sqrt(fan)  # Conv3d's default initialization
    w = (torch.rand(a.cout, a.cin // a.conv_groups, *k, generator=gen) * 2 - 1) * bound
    b = (torch.rand(a.cout, generator=gen) * 2 - 1) * bound
    gamma = torch.rand(a.cout, generator=gen) + 0.5
    beta = torch.rand(a.cout, generator=gen) - 0.5
    return w, b, gamma, beta, a.groups, tuple(a.padding), a.conv_groups


def distributions(shape, gen):
    def u():
        return torch.rand(shape, generator=gen)

    return [
        ("uniform U[0,1)", lambda: u()),
        ("normal N(0,1)", lambda: torch.randn(shape, generator=gen)),
        ("offset U[5,6)", lambda: u() + 5),
        ("offset 0.5 + 1e-4 U", lambda: 0.5 + 1e-4 * u()),
        ("mask {0, 0.1}", lambda: (u() < 0.5).float() * 0.1),
        ("two values {0.1, 0.3}", lambda: torch.where(u() < 0.5, 0.1, 0.3).float()),
        ("tenths {0.1 .. 0.9}", lambda: torch.randint(1, 10, shape, generator=gen).float() / 10),
        ("bytes k / 255", lambda: torch.randint(0, 256, shape, generator=gen).float() / 255),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cin", type=int, default=3)
    ap.add_argument("--cout", type=int, default=16)
    ap.add_argument("--kernel", type=int, nargs="+", default=[4], help="one size, or three (D H W)")
    ap.add_argument("--groups", type=int, default=4, help="GroupNorm groups")
    ap.add_argument("--conv-groups", type=int, default=1)
    ap.add_argument("--padding", type=int, nargs="+", default=[0], help="one, or three (D H W)")
    ap.add_argument("--spatial", type=int, nargs=3, default=[16, 32, 32])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3, help="layers and inputs drawn per distribution")
    ap.add_argument("--routes", default="split3,tf32,k4-accurate,k4-tf32")
    a = ap.parse_args()
    a.kernel = a.kernel * 3 if len(a.kernel) == 1 else a.kernel
    a.padding = a.padding * 3 if len(a.padding) == 1 else a.padding
    routes = a.routes.split(",")
    for r in routes:
        if r not in BOUND:
            ap.error(f"unknown route {r!r}: one of {', '.join(BOUND)}")
    torch.set_grad_enabled(False)
    shape = (a.batch, a.cin, *a.spatial)
    out = [o - (k - 1) + 2 * p for o, k, p in zip(a.spatial, a.kernel, a.padding)]
    print(f"Cin {a.cin}, Cout {a.cout}, kernel {'x'.join(map(str, a.kernel))}, padding {'x'.join(map(str, a.padding))}, "
          f"conv groups {a.conv_groups}, GroupNorm groups {a.groups}, B {a.batch}, input {'x'.join(map(str, a.spatial))} "
          f"({math.prod(out)} output positions per sample); {a.seeds} draws per input, the largest relative L2 error "
          "against float64; * over the route's bound")
    print("| input | " + " | ".join(f"{r} (bound {BOUND[r]:.0e})" for r in routes) + " |")
    print("|---|" + "---:|" * len(routes))
    gen = torch.Generator().manual_seed(0)
    names = [name for name, _ in distributions(shape, gen)]
    worst = {name: {r: 0.0 for r in routes} for name in names}
    for _ in range(a.seeds):
        layer = random_layer(a, gen)
        for name, draw in distributions(shape, gen):
            x = draw()
            ref = forward(x, layer, "exact")
            for r in routes:
                err = ((forward(x, layer, r) - ref).norm() / ref.norm()).item()
                worst[name][r] = max(worst[name][r], err)
    for name in names:
        cells = [f"{worst[name][r]:.1e}{' *' if worst[name][r] > BOUND[r] else ''}" for r in routes]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
