#!/usr/bin/env python3
"""File-to-file inference, timed as a user waits for it: N input files of the standard shape
(default 32 of B = 1024, 201 MB each) written once, then in one run

    one command     fused3d --input DIR --output-dir OUT (the whole job, wall time)
    per file        fused3d --input F --output O once per file (wall time, summed)
    python loop     one process that has imported torch: torch.load, the reference model in eager
                    float32 on the GPU, torch.save, per file (the loop's wall time)

against the ceilings of the stages measured in the same run: reading the files from the page cache
(each read whole once before, so they are cached) and the host-to-device copy from pinned memory.
Also the one-file target: the whole command on one B = 4096 file (805 MB), against torch.load of
the same file in this process. Prints a table; --csv writes the rows.

    python3 tools/bench_files.py --exe build/fused3d --files 32 --dir /tmp/fused3d_files
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_model import Model  # noqa: E402


def wall(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def read_rate(paths):
    """GB/s of reading the files whole from the page cache (after one read to cache them)."""
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    start = time.perf_counter()
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    return total / (time.perf_counter() - start) / 1e9


def copy_rate(nbytes, runs=10):
    """GB/s of a pinned host-to-device copy of nbytes, CUDA events, median."""
    host = torch.empty(nbytes // 4, dtype=torch.float32).pin_memory()
    dev = torch.empty_like(host, device="cuda")
    times = []
    for _ in range(runs + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dev.copy_(host, non_blocking=True)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times = sorted(times[2:])
    return nbytes / times[len(times) // 2] / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", default="build/fused3d")
    p.add_argument("--files", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dir", default="/tmp/fused3d_files", help="where the inputs and outputs go (removed first)")
    p.add_argument("--per-file", type=int, default=None, help="files for the per-file runs (default: all)")
    p.add_argument("--csv", help="write the rows here")
    args = p.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    inputs, outputs = os.path.join(args.dir, "in"), os.path.join(args.dir, "out")
    os.makedirs(inputs)
    torch.manual_seed(0)
    model = Model(3, 16, 4).eval()
    scripted = os.path.join(args.dir, "model.pt")
    torch.jit.script(model).save(scripted)
    paths = []
    for i in range(args.files):
        paths.append(os.path.join(inputs, f"x{i:04d}.pt"))
        torch.save(torch.rand(args.batch, 3, 16, 32, 32), paths[-1])
    file_bytes = os.path.getsize(paths[0])
    total_bytes = file_bytes * args.files
    samples = args.batch * args.files
    rows = []

    def add(name, seconds, files):
        rows.append((name, seconds, files / seconds, files * args.batch / seconds, files * file_bytes / seconds / 1e9))

    read = read_rate(paths)
    h2d = copy_rate(file_bytes)
    add("one command", wall([args.exe, "--model", scripted, "--input", inputs, "--output-dir", outputs, "--quiet"]),
        args.files)
    per_file = paths[: args.per_file or args.files]
    start = time.perf_counter()
    for i, x in enumerate(per_file):
        subprocess.run([args.exe, "--model", scripted, "--input", x, "--output", os.path.join(args.dir, f"o{i}.pt")],
                       check=True, stdout=subprocess.DEVNULL)
    add("per file", time.perf_counter() - start, len(per_file))
    cuda_model = model.cuda()
    with torch.no_grad():
        start = time.perf_counter()
        for i, x in enumerate(paths):
            out = cuda_model(torch.load(x).cuda())
            torch.save(out.cpu(), os.path.join(args.dir, f"py{i}.pt"))
        add("python loop", time.perf_counter() - start, args.files)
    # Results of the one command are what per-file runs give, bit for bit.
    same = all(torch.equal(torch.load(os.path.join(outputs, os.path.basename(x))), torch.load(os.path.join(args.dir, f"o{i}.pt")))
               for i, x in enumerate(per_file))

    big = os.path.join(args.dir, "big.pt")
    torch.save(torch.rand(4096, 3, 16, 32, 32), big)
    read_rate([big])
    one_file = wall([args.exe, "--model", scripted, "--input", big, "--output", os.path.join(args.dir, "big_out.pt")])
    start = time.perf_counter()
    torch.load(big)
    torch_load = time.perf_counter() - start
    timings = subprocess.run([args.exe, "--model", scripted, "--input", big, "--timings"], check=True,
                             capture_output=True, text=True).stdout.splitlines()[-1]

    gpu = torch.cuda.get_device_name()
    print(f"\n{gpu}: {args.files} files of B = {args.batch} ({file_bytes / 1e6:.0f} MB each, {total_bytes / 1e9:.2f} GB)")
    print(f"ceilings: page-cache read {read:.2f} GB/s, pinned host-to-device copy {h2d:.2f} GB/s; "
          f"the slower: {min(read, h2d):.2f} GB/s\n")
    print("| way | seconds | files/s | samples/s | GB/s | of the slower ceiling |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s, fps, sps, gbs in rows:
        print(f"| {name} | {s:.2f} | {fps:.2f} | {sps:.0f} | {gbs:.2f} | {gbs / min(read, h2d):.0%} |")
    loop = next(r for r in rows if r[0] == "python loop")
    one = next(r for r in rows if r[0] == "one command")
    print(f"\none command vs python loop: {one[2] / loop[2]:.2f}x; results bitwise equal to per-file runs: {same}")
    print(f"one B = 4096 file (805 MB), whole command: {one_file:.2f} s; torch.load of it in this process: "
          f"{torch_load:.2f} s\n  {timings}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["gpu", "way", "seconds", "files_per_s", "samples_per_s", "gb_per_s", "read_gbs", "h2d_gbs"])
            for r in rows:
                w.writerow([gpu, *r, read, h2d])
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
