#!/usr/bin/env python3
"""The standard layer (Cin 3, Cout 16, 16x32x32, kernel 4, 4 groups) over a batch sweep: fused3d in
both modes and libtorch native (float32) through the executable, and PyTorch's own options side
by side in this process, each with its relative L2 error against float64:

    eager fp32              cuDNN, TF32 off
    eager tf32              TF32 on, cudnn.benchmark
    channels_last tf32      the same in channels_last_3d
    fp16 autocast           channels_last_3d, cudnn.benchmark
    bf16 autocast           channels_last_3d, cudnn.benchmark
    compile tf32            torch.compile(mode="max-autotune"), TF32 on
    compile bf16            torch.compile(mode="max-autotune"), bf16 autocast, channels_last_3d

"PyTorch's best" is the fastest of them whatever its error; per mode, the fastest within the
mode's bound (accurate 1e-5, tf32 1e-3) is what the mode compares against like with like. Writes
PREFIX.csv and PREFIX.png (time and speedup over PyTorch's best per batch), prints a markdown table.

    python3 tools/bench.py --exe build/fused3d --out docs/bench

Timing: CUDA events around each run after warm-up, median of --runs; inputs smaller than 200 MB
are cloned and rotated (as fused3d --bench does) so small batches are not timed out of L2.
torch.compile compiles once per batch (minutes in all): --compile-batches says where.
"""
import argparse
import contextlib
import copy
import csv
import os
import re
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_model import Model  # noqa: E402

ROTATION_BYTES = 200 << 20
MAX_COPIES = 64
BOUND = {"accurate": 1e-5, "tf32": 1e-3}


def run_executable(exe, batch, precision, runs):
    """(median, min, max) ms of fused and of native from `fused3d --check --bench`, fused's kernel, and
    its relative L2 error against libtorch native in float32 (whose own against float64 is ~1e-7)."""
    out = subprocess.run([exe, "--batch", str(batch), "--precision", precision, "--check", "--bench", str(runs)],
                         check=True, capture_output=True, text=True).stdout
    times = {}
    for name in ("fused", "native"):
        m = re.search(rf"^  {name}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", out, re.M)
        times[name] = tuple(float(v) for v in m.groups())
    error = float(re.search(r"relative L2 error ([0-9.e+-]+)", out).group(1))
    return times, re.search(r"^fused3d: kernel  (\S+)", out, re.M).group(1), error


def time_cuda(fn, inputs, runs, warmup=5):
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for event in starts + stops:  # events are created at their first record: not inside a timing
        event.record()
    torch.cuda.synchronize()
    for i in range(runs):
        starts[i].record()
        fn(inputs[i % len(inputs)])
        stops[i].record()
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in zip(starts, stops))
    return ms[len(ms) // 2], ms[0], ms[-1]


def rotating_inputs(x):
    copies = max(1, min(MAX_COPIES, ROTATION_BYTES // (x.numel() * x.element_size())))
    return [x] + [x.clone() for _ in range(copies - 1)]


@contextlib.contextmanager
def backends(tf32, benchmark):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark) = saved


def pytorch_options(model, compiled_batches, batch):
    """(name, callable taking x, tf32, cudnn.benchmark, channels_last) for PyTorch's ways to run it."""
    # The same parameters in the other layout: Module.to converts in place, so on a copy.
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    options = [("eager fp32", model, False, False, False), ("eager tf32", model, True, True, False),
               ("channels_last tf32", cl, True, True, True)]
    for name, dtype in (("fp16 autocast", torch.float16), ("bf16 autocast", torch.bfloat16)):
        def run(x, dtype=dtype):
            with torch.autocast("cuda", dtype=dtype):
                return cl(x)
        options.append((name, run, True, True, True))
    if batch in compiled_batches:
        options.append(("compile tf32", compiled_batches[batch][0], True, True, False))
        options.append(("compile bf16", compiled_batches[batch][1], True, True, True))
    return options


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", default="build/fused3d")
    p.add_argument("--batches", default="1,7,64,333,1024,4096")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--out", default="docs/bench", help="output prefix: PREFIX.csv, PREFIX.png")
    p.add_argument("--compile-batches", default="1024", help="batches for torch.compile ('' for none)")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    model = Model(3, 16, 4).cuda().eval()
    model64 = Model(3, 16, 4).cuda().double().eval()
    model64.load_state_dict(model.state_dict())
    gpu = torch.cuda.get_device_name()
    compiled = {}
    for b in [int(v) for v in args.compile_batches.split(",") if v]:
        plain, cl = Model(3, 16, 4).cuda().eval(), Model(3, 16, 4).cuda().eval()
        plain.load_state_dict(model.state_dict())
        cl.load_state_dict(model.state_dict())
        tf32 = torch.compile(plain, mode="max-autotune")
        compiled_cl = torch.compile(cl.to(memory_format=torch.channels_last_3d), mode="max-autotune")

        def bf16(x, f=compiled_cl):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return f(x)
        compiled[b] = (tf32, bf16)

    rows = []  # (batch, implementation, median, min, max, rel. L2 vs float64, kernel)
    for batch in batches:
        x = torch.rand(batch, 3, 16, 32, 32, device="cuda")
        with torch.no_grad():
            ref = model64(x.double())
            for precision in ("accurate", "tf32"):
                t, kernel, fused_error = run_executable(args.exe, batch, precision, args.runs)
                rows.append((batch, f"fused {precision}", *t["fused"], fused_error, kernel))
                if precision == "accurate":
                    rows.append((batch, "libtorch native (fused3d)", *t["native"], None, ""))
            for name, fn, tf32, benchmark, channels_last in pytorch_options(model, compiled, batch):
                xs = x.to(memory_format=torch.channels_last_3d) if channels_last else x
                with backends(tf32, benchmark):
                    out = fn(xs).double()
                    error = ((out - ref).norm() / ref.norm()).item()
                    rows.append((batch, name, *time_cuda(fn, rotating_inputs(xs), args.runs), error, ""))
        print(f"B={batch}: " + ", ".join(f"{r[1]} {r[2]:.4f}" for r in rows if r[0] == batch), flush=True)

    median = {(r[0], r[1]): r[2] for r in rows}
    error = {(r[0], r[1]): r[5] for r in rows}
    impls = list(dict.fromkeys(r[1] for r in rows))
    pytorch = [i for i in impls if not i.startswith("fused") and not i.startswith("libtorch")]

    def best(b, bound=None):
        cands = [i for i in pytorch if (b, i) in median and (bound is None or error[(b, i)] <= bound)]
        return min(cands, key=lambda i: median[(b, i)]) if cands else None

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gpu", "batch", "implementation", "median_ms", "min_ms", "max_ms", "rel_l2_vs_float64", "kernel"])
        for r in rows:
            w.writerow([gpu, *r[:5], "" if r[5] is None else f"{r[5]:.3e}", r[6]])

    print(f"\n{gpu}, median ms over {args.runs} runs; PyTorch's errors are relative L2 against float64\n")
    print("| batch | fused accurate | fused tf32 | PyTorch's best | its ms | its error | best within 1e-5 | best within 1e-3 "
          "| eager fp32 | accurate vs best | tf32 vs best | accurate vs best within 1e-5 | tf32 vs best within 1e-3 |")
    print("|---:|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for b in batches:
        fa, ft, top = median[(b, "fused accurate")], median[(b, "fused tf32")], best(b)
        a5, t3 = best(b, BOUND["accurate"]), best(b, BOUND["tf32"])
        print(f"| {b} | {fa:.4f} | {ft:.4f} | {top} | {median[(b, top)]:.4f} | {error[(b, top)]:.1e} | "
              f"{a5} ({median[(b, a5)]:.4f}) | {t3} ({median[(b, t3)]:.4f}) | {median[(b, 'eager fp32')]:.4f} | "
              f"{median[(b, top)] / fa:.1f}x | {median[(b, top)] / ft:.1f}x | {median[(b, a5)] / fa:.1f}x | "
              f"{median[(b, t3)] / ft:.1f}x |")
    print("\nEvery option at every batch (median ms, error vs float64):\n")
    print("| batch | " + " | ".join(impls) + " |")
    print("|---:|" + "---:|" * len(impls))
    for b in batches:
        cells = [(f"{median[(b, i)]:.4f}" + ("" if error[(b, i)] is None else f" ({error[(b, i)]:.0e})"))
                 if (b, i) in median else "-" for i in impls]
        print(f"| {b} | " + " | ".join(cells) + " |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(13, 5))
    for i in impls:
        bs = [b for b in batches if (b, i) in median]
        ax_t.plot(bs, [median[(b, i)] for b in bs], marker="o", label=i)
    for mode in ("accurate", "tf32"):
        ax_s.plot(batches, [median[(b, best(b))] / median[(b, f"fused {mode}")] for b in batches], marker="o",
                  label=f"fused {mode} over PyTorch's best")
    ax_t.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median time (ms)",
             title=f"Conv3d-HardSwish-GroupNorm-mean, {gpu}")
    ax_s.set(xscale="log", xlabel="batch size", ylabel="speedup", title="speedup over PyTorch's best option")
    for ax in (ax_t, ax_s):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)
    print(f"\nwrote {args.out}.csv and {args.out}.png")


if __name__ == "__main__":
    main()
