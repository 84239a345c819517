#!/usr/bin/env python3
"""A suite of layers across the space (kernels 1 to 7, non-cubic kernels, stride, padding,
dilation, conv groups and depthwise, batch 1 to 1024, float16 and bfloat16 models): fused3d in
both modes through its PyTorch operator and PyTorch's own options, all in this process, each timed
and with its relative L2 error against float64 (the reference model in float64 on the GPU, on the
same input values):

    fused accurate / tf32   fused3d_torch.ModelNew(..., precision), with the kernel it runs
    eager fp32              cuDNN, TF32 off
    eager tf32              TF32 on, cudnn.benchmark
    channels_last tf32      the same in channels_last_3d
    fp16 autocast           channels_last_3d, cudnn.benchmark
    bf16 autocast           channels_last_3d, cudnn.benchmark
    compile tf32            torch.compile(mode="max-autotune-no-cudagraphs"), TF32 on

A float16 or bfloat16 layer has its models and input in that dtype (fused3d computes in float32
and rounds its output once); PyTorch's options are then the model in its own dtype: eager, eager
with cudnn.benchmark, channels_last_3d, compile. The bounds the modes are held to (accurate 1e-5,
tf32 1e-3) take one output rounding more there (2^-11 for float16, 2^-8 for bfloat16), for fused3d
and PyTorch alike. Per layer, "best within" a mode's bound is PyTorch's fastest option whose error
is within it: fused accurate is compared with the best within the accurate bound, fused tf32 with
the best within the tf32 bound.

Each option's TFLOP/s counts the convolution alone, 2 B OD OH OW Cout (Cin / conv groups) KD KH KW
(the rest is a few operations per output element); once per run the GPU's dense matmul rates
(8192^3 in float16, float32 with TF32, float32) go beside them for scale.

Writes PREFIX.csv, a row per layer and option, added as each layer finishes (a run cut short keeps
the layers it finished), and PREFIX.png, per layer the two speedups on a log scale with the targets
3x and 1.3x (where matplotlib is installed; the tables do without it); prints markdown tables.
Tables and plot are made from the CSV alone.

    python3 tools/bench_layers.py --out docs/records/<dir>/layers
    python3 tools/bench_layers.py --layers standard,k7 --append --out docs/records/<dir>/layers
    python3 tools/bench_layers.py --report-only --out docs/records/<dir>/layers

    --layers A,B    only these layers of the suite (default: all); --list prints the suite
    --no-compile    leave out torch.compile, whose compile and autotuning per layer is most of a run
    --append        add to PREFIX.csv instead of replacing it, so a suite can be split over runs;
                    a later row for the same layer and option replaces an earlier one in the report
    --report-only   tables and plot from PREFIX.csv, nothing run
    --runs N        timed runs per option (median, min, max)

Timing as in tools/bench.py: CUDA events around each run after warm-up, median of --runs; inputs
smaller than 200 MB are cloned and rotated so small layers are not timed out of L2. An option that
raises is printed and recorded with no time (its kernel column says "failed: ..."), and the run
goes on.
"""
import argparse
import collections
import copy
import csv
import gc
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BOUND, backends, rotating_inputs, time_cuda  # noqa: E402
from export_model import Model  # noqa: E402

Layer = collections.namedtuple(
    "Layer", "name batch cin cout kernel spatial num_groups stride padding dilation conv_groups dtype")


def layer(name, batch, cin, cout, kernel, spatial=(16, 32, 32), num_groups=4, stride=1, padding=0, dilation=1,
          conv_groups=1, dtype="float32"):
    return Layer(name, batch, cin, cout, kernel, tuple(spatial), num_groups, stride, padding, dilation, conv_groups,
                 dtype)


# Batches keep each input within ~270 MB and the float64 reference's largest tensor near 1 GB.
SUITE = [
    layer("standard", 1024, 3, 16, 4),
    layer("k3", 1024, 3, 16, 3),
    layer("cout32_k4", 512, 3, 32, 4, num_groups=8),
    layer("cin8_k3", 256, 8, 32, 3, num_groups=8),
    layer("cin16_k3_pad1_64", 32, 16, 64, 3, (16, 64, 64), num_groups=16, padding=1),
    layer("cin32_k3_8x32", 64, 32, 64, 3, (8, 32, 32), num_groups=8),
    layer("k3_stride2_64", 256, 3, 16, 3, (16, 64, 64), stride=2, padding=1),
    layer("cout64_k3_pad1_112", 8, 3, 64, 3, (16, 112, 112), num_groups=32, padding=1),
    layer("k1", 128, 32, 64, 1, num_groups=8),
    layer("k5", 512, 3, 16, 5),
    layer("k7", 64, 4, 16, 7, padding=3),
    layer("k133", 128, 8, 32, (1, 3, 3), num_groups=8, padding=(0, 1, 1)),
    layer("k315", 256, 3, 16, (3, 1, 5)),
    layer("dilation2", 128, 8, 32, 3, num_groups=8, dilation=2),
    layer("conv_groups4", 64, 32, 64, 3, num_groups=8, conv_groups=4),
    layer("depthwise", 64, 32, 32, 3, num_groups=8, conv_groups=32),
    layer("standard_b1", 1, 3, 16, 4),
    layer("float16", 64, 16, 32, 3, num_groups=8, dtype="float16"),
    layer("bfloat16", 64, 16, 32, 3, num_groups=8, dtype="bfloat16"),
]
BY_NAME = {l.name: l for l in SUITE}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHORT = {"float16": "fp16", "bfloat16": "bf16"}
OUTPUT_ROUNDING = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}  # one rounding of the output
TARGETS = (3.0, 1.3)
MATMUL_N = 8192
MATMUL_RUNS = 10
COLUMNS = ["gpu", "layer", "batch", "dtype", "implementation", "median_ms", "min_ms", "max_ms", "rel_l2_vs_float64",
           "tflops", "kernel"]


def triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def output_size(l):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(l.spatial, triple(l.kernel), triple(l.stride), triple(l.padding),
                                          triple(l.dilation)))


def conv_flops(l):
    return 2 * l.batch * math.prod(output_size(l)) * l.cout * (l.cin // l.conv_groups) * math.prod(triple(l.kernel))


def fmt_triple(v):
    return str(v) if not isinstance(v, (tuple, list)) else "x".join(str(e) for e in v)


def describe(l):
    parts = [f"Cin {l.cin}", f"Cout {l.cout}", f"k {fmt_triple(l.kernel)}"]
    for label, value, default in (("stride", l.stride, 1), ("pad", l.padding, 0), ("dil", l.dilation, 1)):
        if triple(value) != triple(default):
            parts.append(f"{label} {fmt_triple(value)}")
    if l.conv_groups != 1:
        parts.append("depthwise" if l.conv_groups == l.cin == l.cout else f"conv groups {l.conv_groups}")
    parts += [f"G {l.num_groups}", "x".join(str(n) for n in l.spatial)]
    return ", ".join(parts)


def bound(mode, dtype):
    return BOUND[mode] + OUTPUT_ROUNDING.get(dtype, 0.0)


def print_suite():
    print("| name | layer | B | dtype | input MB | output | GFLOP |")
    print("|---|---|---:|---|---:|---|---:|")
    for l in SUITE:
        size = 4 if l.dtype == "float32" else 2
        mb = l.batch * l.cin * math.prod(l.spatial) * size / 2 ** 20
        print(f"| {l.name} | {describe(l)} | {l.batch} | {l.dtype} | {mb:.3g} | "
              f"{'x'.join(str(n) for n in output_size(l))} | {conv_flops(l) / 1e9:.1f} |")


# ---------------------------------------------------------------------------------------------
# Measuring: writes CSV rows (dicts of COLUMNS).


def row(gpu, name, batch, dtype, impl, times=None, error=None, tflops=None, kernel=""):
    med, lo, hi = times if times else (None, None, None)
    return {"gpu": gpu, "layer": name, "batch": batch, "dtype": dtype, "implementation": impl,
            "median_ms": "" if med is None else f"{med:.6g}", "min_ms": "" if lo is None else f"{lo:.6g}",
            "max_ms": "" if hi is None else f"{hi:.6g}", "rel_l2_vs_float64": "" if error is None else f"{error:.3e}",
            "tflops": "" if tflops is None else f"{tflops:.4g}", "kernel": kernel}


def matmul_rows(gpu):
    """The dense rates the convolutions' TFLOP/s can be read against."""
    rows = []
    flops = 2 * MATMUL_N ** 3
    for impl, dtype, tf32 in (("matmul fp16", torch.float16, False), ("matmul tf32", torch.float32, True),
                              ("matmul fp32", torch.float32, False)):
        try:
            a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=dtype)
            b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=dtype)
            with backends(tf32, False):
                t = time_cuda(lambda m: torch.matmul(m, b), [a], MATMUL_RUNS)
            rate = flops / (t[0] * 1e-3) / 1e12
            print(f"{impl} {MATMUL_N}^3: {t[0]:.3f} ms, {rate:.1f} TFLOP/s", flush=True)
            rows.append(row(gpu, f"matmul {MATMUL_N}", "", str(dtype).replace("torch.", ""), impl, t, None, rate))
            del a, b
        except Exception as e:  # noqa: BLE001 - a rate that cannot be had is reported, not fatal
            print(f"{impl} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
        torch.cuda.empty_cache()
    return rows


def options(l, model, x, compile_, also_kernels=()):
    """(name, make) for every implementation of layer l; make() returns (callable, input, tf32,
    cudnn.benchmark, kernel-name callable or None). Built on demand, so one that cannot even be
    built is caught like one whose forward raises. also_kernels: kernel ids (plan.h) whose fused
    forward is timed besides the plan's own choice, as "fused MODE [ID]"."""
    dtype = DTYPES[l.dtype]
    state = model.state_dict()

    def fused(precision):
        def make():
            # Imported here: the extension is built or loaded only when measuring, and a build that
            # fails is this option's failure, not the layer's.
            from fused3d_torch import ModelNew, kernel_name
            m = ModelNew(l.cin, l.cout, l.kernel, l.num_groups, True, precision, stride=l.stride, padding=l.padding,
                         dilation=l.dilation, conv_groups=l.conv_groups).cuda().eval().to(dtype)
            m.group_norm.eps = model.group_norm.eps
            m.load_state_dict(state)
            return m, x, False, False, lambda: kernel_name(m, x)
        return f"fused {precision}", make

    # Module.to(memory_format=...) converts in place: the channels_last model is a copy, so the
    # contiguous options keep contiguous weights.
    cl_cache = {}

    def channels_last():
        if not cl_cache:
            cl_cache["model"] = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
            cl_cache["x"] = x.to(memory_format=torch.channels_last_3d)
        return cl_cache["model"], cl_cache["x"]

    def compiled():
        # A copy of its own, so that what compile captures does not share the eager options' module.
        return torch.compile(copy.deepcopy(model), mode="max-autotune-no-cudagraphs")

    opts = [fused("accurate"), fused("tf32")]
    for kernel in also_kernels:
        # The same operator with the plan held to one kernel (FUSED3D_KERNEL, kernels/plan.h): an
        # A/B of two kernels on one layer in one process. measure_layer clears the variable after it.
        for precision in ("accurate", "tf32"):
            name, make_fused = fused(precision)

            def make(make_fused=make_fused, kernel=kernel):
                os.environ["FUSED3D_KERNEL"] = kernel
                return make_fused()
            opts.append((f"{name} [{kernel}]", make))
    if l.dtype == "float32":
        opts += [("eager fp32", lambda: (model, x, False, False, None)),
                 ("eager tf32", lambda: (model, x, True, True, None)),
                 ("channels_last tf32", lambda: (*channels_last(), True, True, None))]
        for name, autocast_dtype in (("fp16 autocast", torch.float16), ("bf16 autocast", torch.bfloat16)):
            def make(autocast_dtype=autocast_dtype):
                cl, xcl = channels_last()

                def run(inp):
                    with torch.autocast("cuda", dtype=autocast_dtype):
                        return cl(inp)
                return run, xcl, True, True, None
            opts.append((name, make))
        if compile_:
            opts.append(("compile tf32", lambda: (compiled(), x, True, True, None)))
    else:
        # TF32 does not touch float16 / bfloat16 arithmetic: off throughout.
        tag = SHORT[l.dtype]
        opts += [(f"eager {tag}", lambda: (model, x, False, False, None)),
                 (f"eager {tag} benchmark", lambda: (model, x, False, True, None)),
                 (f"channels_last {tag}", lambda: (*channels_last(), False, True, None))]
        if compile_:
            opts.append((f"compile {tag}", lambda: (compiled(), x, False, True, None)))
    return opts


def measure_layer(l, gpu, runs, compile_, also_kernels=()):
    dtype = DTYPES[l.dtype]
    conv = dict(stride=l.stride, padding=l.padding, dilation=l.dilation, conv_groups=l.conv_groups)
    torch.manual_seed(0)
    model = Model(l.cin, l.cout, l.kernel, l.num_groups, **conv).cuda().eval().to(dtype)
    x = torch.rand(l.batch, l.cin, *l.spatial, device="cuda", dtype=dtype)
    with torch.no_grad():
        # The float64 reference takes the (rounded) parameters and input the others compute on.
        model64 = Model(l.cin, l.cout, l.kernel, l.num_groups, **conv).cuda().double().eval()
        model64.load_state_dict(model.state_dict())
        ref = model64(x.double())
        del model64
        torch.cuda.empty_cache()
        ref_norm = ref.norm()
        flops = conv_flops(l)
        rows = []
        for name, make in options(l, model, x, compile_, also_kernels):
            try:
                fn, inp, tf32, benchmark, kernel_fn = make()
                with backends(tf32, benchmark):
                    kernel = kernel_fn() if kernel_fn else ""
                    out = fn(inp)  # also compiles torch.compile's option, outside the timing
                    error = ((out.double() - ref).norm() / ref_norm).item()
                    del out
                    inputs = rotating_inputs(inp)
                    t = time_cuda(fn, inputs, runs)
                    del inputs
                rows.append(row(gpu, l.name, l.batch, l.dtype, name, t, error, flops / (t[0] * 1e-3) / 1e12, kernel))
            except Exception as e:  # noqa: BLE001 - one option failing must not end the suite
                message = str(e).splitlines()[0] if str(e) else ""
                print(f"  {l.name}: {name} failed: {type(e).__name__}: {message[:300]}", flush=True)
                rows.append(row(gpu, l.name, l.batch, l.dtype, name, kernel=f"failed: {type(e).__name__}"))
            os.environ.pop("FUSED3D_KERNEL", None)
            torch.cuda.empty_cache()
    return rows


def run_suite(layers, args):
    gpu = torch.cuda.get_device_name()
    path = args.out + ".csv"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    header = not (args.append and os.path.exists(path) and os.path.getsize(path) > 0)
    print(f"{gpu}, torch {torch.__version__}, {len(layers)} layers, {args.runs} runs each", flush=True)
    with open(path, "a" if args.append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if header:
            w.writeheader()
        with torch.no_grad():
            w.writerows(matmul_rows(gpu))
        f.flush()
        for l in layers:
            start = time.time()
            try:
                rows = measure_layer(l, gpu, args.runs, args.compile, args.also_kernel)
            except Exception as e:  # noqa: BLE001 - e.g. the float64 reference out of memory
                print(f"{l.name}: skipped, {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                      flush=True)
                rows = []
            w.writerows(rows)
            f.flush()
            if rows:
                print(f"{l.name} ({describe(l)}, B {l.batch}, {l.dtype}, {time.time() - start:.0f} s): " +
                      ", ".join(f"{r['implementation']} {r['median_ms'] or 'failed'}" +
                                (f" ({float(r['rel_l2_vs_float64']):.0e})" if r["rel_l2_vs_float64"] else "")
                                for r in rows), flush=True)
            # Each layer starts from a clean slate: no compiled graphs, no cached blocks of the last one.
            if args.compile:
                import torch._dynamo as dynamo
                dynamo.reset()
            del rows
            gc.collect()
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Reporting: from the CSV's rows alone, for a fresh run and --report-only alike.


def read_rows(path):
    def num(v):
        return float(v) if v not in (None, "") else None

    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("gpu") == "gpu":  # a header repeated by a concatenation
                continue
            for k in ("median_ms", "min_ms", "max_ms", "rel_l2_vs_float64", "tflops"):
                r[k] = num(r.get(k))
            rows.append(r)
    return rows


def ms(v):
    return "-" if v is None else f"{v:.4f}"


def err(v):
    return "-" if v is None else f"{v:.1e}"


def report(rows, prefix):
    # The last row of a (gpu, layer, batch, dtype, implementation) wins: a rerun with --append
    # replaces what it measures again.
    latest = {}
    for r in rows:
        latest[(r["gpu"], r["layer"], r["batch"], r["dtype"], r["implementation"])] = r
    gpus = list(dict.fromkeys(k[0] for k in latest))
    summaries = {}
    for gpu in gpus:
        print(f"\n## {gpu}\n")
        matmul = [r for k, r in latest.items() if k[0] == gpu and r["implementation"].startswith("matmul")]
        for size in dict.fromkeys(r["layer"] for r in matmul):
            print(f"Dense {size}^3: " + ", ".join(
                f"{r['implementation'][len('matmul '):]} {r['tflops']:.1f} TFLOP/s" for r in matmul
                if r["layer"] == size and r["tflops"] is not None) + "\n")
        per_layer = collections.OrderedDict()
        for k, r in latest.items():
            if k[0] == gpu and not r["implementation"].startswith("matmul"):
                per_layer.setdefault(k[1:4], {})[k[4]] = r
        order = {name: i for i, name in enumerate(BY_NAME)}
        keys = sorted(per_layer, key=lambda k: (order.get(k[0], len(order)), list(per_layer).index(k)))
        if not keys:
            print("no layer rows")
            continue
        summaries[gpu] = summarize(keys, per_layer)

    if summaries:
        plot(summaries, prefix)


def summarize(keys, per_layer):
    """Prints the tables for one GPU; returns [(layer name, accurate speedup, tf32 speedup)]."""
    print("Median ms; errors are relative L2 against float64. Best within: PyTorch's fastest option within the "
          "mode's bound (accurate 1e-5, tf32 1e-3; float16 / bfloat16 layers one output rounding more, 2^-11 / "
          "2^-8). TFLOP/s: the convolution's 2 B OD OH OW Cout (Cin / conv groups) KD KH KW.\n")
    print("| layer | B | dtype | kernel (fused) | fused accurate | fused tf32 | best within 1e-5 | best within 1e-3 "
          "| best at any error | accurate vs best within 1e-5 | tf32 vs best within 1e-3 "
          "| fused TFLOP/s accurate / tf32 | fused error accurate / tf32 |")
    print("|---|---:|---|---|---:|---:|---|---|---|---:|---:|---:|---|")
    speedups, over = [], False
    for key in keys:
        name, batch, dtype = key
        impls = per_layer[key]
        l = BY_NAME.get(name)
        label = f"{name}: {describe(l)}" if l and str(l.batch) == batch and l.dtype == dtype else name
        fa, ft = impls.get("fused accurate", {}), impls.get("fused tf32", {})
        pytorch = [i for i, r in impls.items() if not i.startswith("fused") and r["median_ms"] is not None]

        def best(limit=None):
            errors = {i: impls[i]["rel_l2_vs_float64"] for i in pytorch}
            c = [i for i in pytorch if limit is None or (errors[i] is not None and errors[i] <= limit)]
            return min(c, key=lambda i: impls[i]["median_ms"]) if c else None

        def cell(i, with_error=False):
            if i is None:
                return "-"
            text = f"{i} ({impls[i]['median_ms']:.4f}"
            return text + (f", {err(impls[i]['rel_l2_vs_float64'])})" if with_error else ")")

        def ratio(i, fused):
            if i is None or fused.get("median_ms") is None:
                return None
            return impls[i]["median_ms"] / fused["median_ms"]

        b5, b3, top = best(bound("accurate", dtype)), best(bound("tf32", dtype)), best()
        sa, st = ratio(b5, fa), ratio(b3, ft)
        speedups.append((name, sa, st))
        kernels = list(dict.fromkeys(k for k in (fa.get("kernel", ""), ft.get("kernel", "")) if k))
        errors = []
        for mode, r in (("accurate", fa), ("tf32", ft)):
            e = r.get("rel_l2_vs_float64")
            mark = "*" if e is not None and e > bound(mode, dtype) else ""
            over = over or bool(mark)
            errors.append(err(e) + mark)
        tfl = " / ".join("-" if r.get("tflops") is None else f"{r['tflops']:.2f}" for r in (fa, ft))
        print(f"| {label} | {batch} | {dtype} | {' / '.join(kernels) or '-'} | {ms(fa.get('median_ms'))} | "
              f"{ms(ft.get('median_ms'))} | {cell(b5)} | {cell(b3)} | {cell(top, True)} | "
              f"{'-' if sa is None else f'{sa:.2f}x'} | {'-' if st is None else f'{st:.2f}x'} | {tfl} | "
              f"{' / '.join(errors)} |")
    if over:
        print("\n\\* over the mode's bound")
    for mode, idx in (("accurate vs best within its bound", 1), ("tf32 vs best within its bound", 2)):
        values = [s[idx] for s in speedups if s[idx]]
        if values:
            g = math.exp(sum(math.log(v) for v in values) / len(values))
            print(f"\nGeometric mean, {mode}: {g:.2f}x over {len(values)} layer{'s' * (len(values) != 1)}")

    # Every option, a table per dtype (each dtype has its own set of PyTorch options).
    for dtype in dict.fromkeys(k[2] for k in keys):
        group = [k for k in keys if k[2] == dtype]
        impls = list(dict.fromkeys(i for k in group for i in per_layer[k]))
        print(f"\nEvery option, {dtype} layers (median ms, error vs float64):\n")
        print("| layer | B | " + " | ".join(impls) + " |")
        print("|---|---:|" + "---:|" * len(impls))
        for k in group:
            cells = []
            for i in impls:
                r = per_layer[k].get(i)
                if r is None:
                    cells.append("-")
                elif r["median_ms"] is None:
                    cells.append("failed")
                else:
                    cells.append(f"{r['median_ms']:.4f} ({err(r['rel_l2_vs_float64'])})")
            print(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + " |")
    return speedups


def plot(summaries, prefix):
    try:
        import matplotlib
    except ImportError:
        print(f"\nmatplotlib is not installed: no {prefix}.png")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(len(summaries), 1, figsize=(max(8, 0.75 * max(len(s) for s in summaries.values()) + 2),
                                                         5.5 * len(summaries)), squeeze=False)
    for ax, (gpu, speedups) in zip(axes[:, 0], summaries.items()):
        names = [s[0] for s in speedups]
        width = 0.38
        for offset, idx, label in ((-width / 2, 1, "fused accurate over PyTorch's best within 1e-5"),
                                   (width / 2, 2, "fused tf32 over PyTorch's best within 1e-3")):
            xs = [i + offset for i, s in enumerate(speedups) if s[idx]]
            ys = [s[idx] for s in speedups if s[idx]]
            bars = ax.bar(xs, ys, width, label=label)
            for bar, y in zip(bars, ys):
                ax.annotate(f"{y:.2f}", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom", fontsize=6)
        for target, style in zip(TARGETS, ("--", ":")):
            ax.axhline(target, color="black", linestyle=style, linewidth=1, label=f"target {target:g}x")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}x" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
        ax.set_xticks(range(len(names)))
        ax.set_xlim(-0.75, max(len(names), 4) - 0.25)  # a few layers do not make bars a panel wide
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="speedup over PyTorch's best within the bound",
               title=f"Conv3d-HardSwish-GroupNorm-mean per layer, {gpu}\n"
                     "(float16 / bfloat16 layers: each bound plus one output rounding)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(prefix + ".png", dpi=110)
    print(f"\nwrote {prefix}.png")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    p.add_argument("--list", action="store_true", help="print the suite and exit")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--out", default="docs/bench_layers", help="output prefix: PREFIX.csv, PREFIX.png")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="include torch.compile (default on)")
    p.add_argument("--also-kernel", action="append", default=[], metavar="ID",
                   help="also time the fused forward held to this kernel (igemm, igemm-box, ...; repeatable)")
    p.add_argument("--append", action="store_true", help="append to PREFIX.csv instead of overwriting it")
    p.add_argument("--report-only", action="store_true", help="tables and plot from PREFIX.csv; run nothing")
    args = p.parse_args()
    if args.list:
        print_suite()
        return
    names = [n for n in args.layers.split(",") if n] or list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        p.error(f"unknown layer(s) {', '.join(unknown)}; the suite: {', '.join(BY_NAME)}")
    if not args.report_only:
        run_suite([BY_NAME[n] for n in names], args)
    elif not os.path.exists(args.out + ".csv"):
        p.error(f"--report-only: no {args.out}.csv")
    report(read_rows(args.out + ".csv"), args.out)
    print(f"\nfrom {args.out}.csv")


if __name__ == "__main__":
    main()
