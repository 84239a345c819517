#!/usr/bin/env python3
"""The usual evaluation protocol for ModelNew, on the GPU, for three layers: build the reference
Model and ModelNew from the same seed and init inputs, compare on 5 fresh random inputs (atol = rtol
= 1e-2, and our relative L2 bound against float64), time both with CUDA events, and compare
ModelNew's time with the fused3d executable's on the same model and input (within 10%).

    python3 tools/check_model_new.py --exe build/fused3d

Timing, as in fused3d --bench and tools/bench.py: warm-up, median of --runs, inputs under 200 MB
cloned and rotated. Prints a table and PASS/FAIL; exits 1 on any FAIL.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import rotating_inputs, time_cuda  # noqa: E402
from export_model import Model  # noqa: E402
from fused3d_torch import ModelNew  # noqa: E402

BOUND = {"accurate": 1e-5, "tf32": 1e-3}
# (in, out, kernel, groups, bias, spatial, batch)
CONFIGS = [(3, 16, 4, 4, True, (16, 32, 32), 1024),
           (2, 16, 4, 2, False, (12, 40, 40), 512),
           (4, 24, 3, 6, True, (10, 24, 24), 256)]
SPEED_MARGIN = 1.10


def executable_fused_ms(exe, ref, x, precision, runs):
    with tempfile.TemporaryDirectory() as tmp:
        model_path, input_path = os.path.join(tmp, "model.pt"), os.path.join(tmp, "x.pt")
        torch.jit.script(ref).save(model_path)
        torch.save(x.cpu(), input_path)
        out = subprocess.run([exe, "--model", model_path, "--input", input_path, "--precision", precision,
                              "--bench", str(runs)], check=True, capture_output=True, text=True).stdout
    return float(re.search(r"^  fused\s+([0-9.]+)", out, re.M).group(1)), re.search(r"kernel  (.*)", out).group(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", default="build/fused3d")
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| layer | precision | batch | max rel. L2 vs float64 | reference ms | ModelNew ms | fused3d ms | "
          "ModelNew / fused3d | result |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    failed = False
    gen = torch.Generator().manual_seed(1234)
    for cin, cout, k, groups, bias, spatial, batch in CONFIGS:
        for precision in ("accurate", "tf32"):
            torch.manual_seed(0)
            ref = Model(cin, cout, k, groups, bias=bias).cuda().eval()
            torch.manual_seed(0)
            new = ModelNew(cin, cout, k, groups, bias=bias, precision=precision).cuda().eval()
            ref64 = Model(cin, cout, k, groups, bias=bias).cuda().double().eval()
            ref64.load_state_dict(ref.state_dict())
            ok, worst = True, 0.0
            with torch.no_grad():
                for _ in range(5):
                    x = torch.rand(batch, cin, *spatial, generator=gen).cuda()
                    out = new(x)
                    ok &= torch.allclose(out, ref(x), atol=1e-2, rtol=1e-2)
                    r64 = ref64(x.double())
                    worst = max(worst, ((out.double() - r64).norm() / r64.norm()).item())
                ok &= worst <= BOUND[precision]
                inputs = rotating_inputs(x)
                t_ref = time_cuda(ref, inputs, args.runs)[0]
                t_new = time_cuda(new, inputs, args.runs)[0]
            t_exe, kernel = executable_fused_ms(args.exe, ref.cpu(), x, precision, args.runs)
            ok &= t_new <= SPEED_MARGIN * t_exe
            failed |= not ok
            layer = f"Cin {cin}, Cout {cout}, k {k}, G {groups}{'' if bias else ', no bias'}, {spatial} ({kernel.split(' (')[0]})"
            print(f"| {layer} | {precision} | {batch} | {worst:.2e} | {t_ref:.4f} | {t_new:.4f} | {t_exe:.4f} | "
                  f"{t_new / t_exe:.2f} | {'PASS' if ok else 'FAIL'} |", flush=True)
    print("FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
