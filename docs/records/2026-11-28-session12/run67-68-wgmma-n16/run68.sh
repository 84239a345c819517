#!/usr/bin/env bash
# Session 12, run 68: wgmma variants (timing only): ring depth 6, statistics replaced by a plain sum; base = a681589's kernels.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d >$out/build.log 2>&1; echo "tree build $?") &
for v in $VARIANTS; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "$v build $?") &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for round in 1 2; do for v in tree $VARIANTS; do exe=$(exe_of $v)
  for prec in tf32; do echo "$round $v $prec $(timeout 60 $exe --precision $prec --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
