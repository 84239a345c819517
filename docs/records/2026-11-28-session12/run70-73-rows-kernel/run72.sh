#!/usr/bin/env bash
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d >$out/build.log 2>&1; echo "build $?"
names=$(python3 exp/debug72.py | tail -1)
for n in $names; do echo "$n $(./build/fused3d --model /tmp/dbg_$n.pt --input /tmp/dbg_x.pt --precision tf32 --check 2>&1 | grep -E 'check' | sed 's/.*error/error/')"; done | tee $out/debug.log
