#!/usr/bin/env python3
"""Batch sweep on the GPU: fused3d (accurate and tf32 modes) and libtorch native through the
executable, PyTorch eager (contiguous and channels_last_3d) and torch.compile from Python, all on
the standard layer. Writes a CSV, a PNG (time vs batch, log-log, and speedup over eager) and
prints a markdown table.

    python3 tools/bench.py --exe build/fused3d --out docs/bench

Timing: CUDA events around each run after warm-up, median of --runs; inputs smaller than 200 MB
are cloned and rotated (as fused3d --bench does) so small batches are not timed out of L2.
"""
import argparse
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


def run_executable(exe, batch, precision, runs):
    """(fused median, native median) in ms from `fused3d --bench`."""
    out = subprocess.run([exe, "--batch", str(batch), "--precision", precision, "--bench", str(runs)],
                         check=True, capture_output=True, text=True).stdout
    times = {}
    for name in ("fused", "native"):
        m = re.search(rf"^  {name}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", out, re.M)
        times[name] = tuple(float(v) for v in m.groups())
    return times


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", default="build/fused3d")
    p.add_argument("--batches", default="1,7,64,333,1024,4096")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--out", default="docs/bench", help="output prefix: PREFIX.csv, PREFIX.png")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    model = Model(3, 16, 4).cuda().eval()
    compiled = None if args.no_compile else torch.compile(model, dynamic=True)
    gpu = torch.cuda.get_device_name()

    rows = []
    for batch in batches:
        for precision in ("accurate", "tf32"):
            t = run_executable(args.exe, batch, precision, args.runs)
            rows.append((batch, f"fused {precision}", *t["fused"]))
            if precision == "accurate":
                rows.append((batch, "libtorch native (fused3d)", *t["native"]))
        x = torch.rand(batch, 3, 16, 32, 32, device="cuda")
        with torch.no_grad():
            rows.append((batch, "eager", *time_cuda(model, rotating_inputs(x), args.runs)))
            model_cl = model.to(memory_format=torch.channels_last_3d)
            xs = rotating_inputs(x.to(memory_format=torch.channels_last_3d))
            rows.append((batch, "eager channels_last_3d", *time_cuda(model_cl, xs, args.runs)))
            model.to(memory_format=torch.contiguous_format)
            if compiled is not None:
                rows.append((batch, "torch.compile", *time_cuda(compiled, rotating_inputs(x), args.runs)))
        print(f"B={batch}: " + ", ".join(f"{r[1]} {r[2]:.4f}" for r in rows if r[0] == batch), flush=True)

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gpu", "batch", "implementation", "median_ms", "min_ms", "max_ms"])
        for r in rows:
            w.writerow([gpu, *r])
    impls = list(dict.fromkeys(r[1] for r in rows))
    median = {(r[0], r[1]): r[2] for r in rows}

    print(f"\n{gpu}, median ms over {args.runs} runs (speedup over eager in parentheses)\n")
    print("| batch | " + " | ".join(impls) + " |")
    print("|---:|" + "---:|" * len(impls))
    for b in batches:
        cells = [f"{median[(b, i)]:.4f} ({median[(b, 'eager')] / median[(b, i)]:.1f}x)" for i in impls]
        print(f"| {b} | " + " | ".join(cells) + " |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(13, 5))
    for i in impls:
        ax_t.plot(batches, [median[(b, i)] for b in batches], marker="o", label=i)
        ax_s.plot(batches, [median[(b, "eager")] / median[(b, i)] for b in batches], marker="o", label=i)
    ax_t.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median time (ms)",
             title=f"Conv3d-HardSwish-GroupNorm-mean, {gpu}")
    ax_s.set(xscale="log", xlabel="batch size", ylabel="speedup over PyTorch eager", title="speedup")
    for ax in (ax_t, ax_s):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)
    print(f"\nwrote {args.out}.csv and {args.out}.png")


if __name__ == "__main__":
    main()
