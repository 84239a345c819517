#!/usr/bin/env python3
"""ModelNew built under each TORCH_CUDA_ARCH_LIST a user may have set (unset, 9.0, 9.0a, 8.0;9.0a)
runs the kernel its compiled code allows, and the same kernel as the executable where that code
has sm_90a: which kernels run is read from the loaded code, not from a build flag. Each list's
build, its kernel's name for the standard layer and batch in both modes, and its error against
float64 come from a child process (the four build at once); this process compares them with the
executable's kernel line. Registered with ctest; without a GPU it exits 77 (skipped).

    python3 tests/test_arch_lists.py build/fused3d
"""
import json
import os
import re
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
LISTS = [None, "9.0", "9.0a", "8.0;9.0a"]
BOUND = {"accurate": 1e-5, "tf32": 1e-3}


def child():
    """Prints, for the arch list in this process's environment, {precision: [kernel, rel. L2]}."""
    sys.path.insert(0, os.path.join(HERE, "..", "tools"))
    from export_model import Model
    from fused3d_torch import ModelNew, kernel_name
    result = {}
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1024, 3, 16, 32, 32, generator=gen).cuda()
    for precision in ("accurate", "tf32"):
        torch.manual_seed(0)
        new = ModelNew(3, 16, 4, precision=precision).cuda().eval()
        ref64 = Model(3, 16, 4).cuda().double().eval()
        ref64.load_state_dict(new.state_dict())
        with torch.no_grad():
            out = torch.full((1024, 16), float("nan"), device="cuda")
            out.copy_(new(x))
            r = ref64(x.double())
        result[precision] = [kernel_name(new, x), ((out.double() - r).norm() / r.norm()).item()]
    print(json.dumps(result))


def executable_kernel(exe, precision):
    out = subprocess.run([exe, "--precision", precision], check=True, capture_output=True, text=True).stdout
    return re.search(r"^fused3d: kernel  (.*)$", out, re.M).group(1)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child()
    if not torch.cuda.is_available():
        print("no CUDA device: arch-list tests skipped")
        sys.exit(77)
    exe = sys.argv[1]
    hopper = torch.cuda.get_device_capability() == (9, 0)
    children = []
    for arch in LISTS:
        env = dict(os.environ)
        env.pop("TORCH_CUDA_ARCH_LIST", None)
        if arch is not None:
            env["TORCH_CUDA_ARCH_LIST"] = arch
        children.append(subprocess.Popen([sys.executable, __file__, "--child"], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    failed = False
    for arch, p in zip(LISTS, children):
        out, err = p.communicate()
        name = "unset" if arch is None else arch
        if p.returncode != 0:
            print(f"TORCH_CUDA_ARCH_LIST {name}: FAIL, the child exited {p.returncode}\n{err[-3000:]}")
            failed = True
            continue
        result = json.loads(out.strip().splitlines()[-1])
        has_90a = arch is None or "9.0a" in arch
        for precision, (kernel, error) in result.items():
            if hopper and has_90a:
                want = executable_kernel(exe, precision)  # the executable is built for sm_90a
            else:
                want = None  # no sm_90a code: the planes kernel must not run
            ok = error <= BOUND[precision] and (kernel == want if want else not kernel.startswith("k4-planes"))
            failed |= not ok
            print(f"TORCH_CUDA_ARCH_LIST {name}, {precision}: {kernel}; rel. L2 vs float64 {error:.2e}"
                  f"{'' if want is None else '; executable: ' + want}: {'PASS' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
