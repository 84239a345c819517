#!/usr/bin/env python3
"""Compares the machine code (SASS) of the CUDA kernels in two sets of object files, kernel by
kernel: identical, identical but for the offsets of kernel parameters (a parameter struct
reorganized, the same instructions reading the same fields), or different (with the count of
differing instructions).

    python3 tools/sass_compare.py --old old/*.o --new build/CMakeFiles/fused3d_kernels.dir/kernels/*.o \\
        --rename conv_k4_tensorcore_moments_kernel=conv_k4_mma_moments_kernel

Kernels are matched by their demangled name with namespaces dropped (template arguments kept),
after the --rename substitutions. Needs cuobjdump and c++filt on PATH (or CUOBJDUMP=...). Exits 1
if any kernel differs or is missing on one side.
"""
import argparse
import os
import re
import subprocess
import sys

PARAM = re.compile(r"c\[0x0\]\[0x[0-9a-f]+\]")


def kernels(objects):
    """{name: [instruction, ...]} of every kernel in the objects' sm_90a/sm_90 SASS."""
    cuobjdump = os.environ.get("CUOBJDUMP", "cuobjdump")
    found = {}
    for obj in objects:
        text = subprocess.run([cuobjdump, "-sass", obj], check=True, capture_output=True, text=True).stdout
        name = None
        for line in text.splitlines():
            m = re.match(r"\s*Function : (\S+)", line)
            if m:
                name = m.group(1)
                found[name] = []
                continue
            m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s*(.*?)\s*;?\s*/\*", line)
            if name and m:
                found[name].append(m.group(1))
    return found


def readable(mangled, renames):
    name = subprocess.run(["c++filt", mangled], check=True, capture_output=True, text=True).stdout.strip()
    name = re.sub(r"\b[A-Za-z_]\w*::", "", name)  # namespaces and enum scopes
    name = re.sub(r"\([^()]*\)$", "", name)  # the parameter list
    name = re.sub(r"^void ", "", name)
    for old, new in renames:
        name = name.replace(old, new)
    return name


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", nargs="+", required=True, help="object files before")
    p.add_argument("--new", nargs="+", required=True, help="object files after")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N differing instructions")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="a kernel name's substring as it was -> as it is")
    args = p.parse_args()
    renames = [tuple(r.split("=", 1)) for r in args.rename]
    old = {readable(k, renames): v for k, v in kernels(args.old).items()}
    new = {readable(k, []): v for k, v in kernels(args.new).items()}
    bad = 0
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            print(f"only {'after' if name in new else 'before'}: {name}")
            bad += 1
            continue
        a, b = old[name], new[name]
        if a == b:
            verdict = "identical"
        elif [PARAM.sub("c[0x0][param]", i) for i in a] == [PARAM.sub("c[0x0][param]", i) for i in b]:
            verdict = "identical but for parameter offsets"
        else:
            differing = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
            verdict = f"DIFFERENT: {len(a)} -> {len(b)} instructions, {differing} differ"
            bad += 1
            shown = [(k, x, y) for k, (x, y) in enumerate(zip(a, b)) if x != y][:args.show]
            for k, x, y in shown:
                print(f"    {k}: {x}  ->  {y}")
        print(f"{verdict}: {name} ({len(b)} instructions)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
