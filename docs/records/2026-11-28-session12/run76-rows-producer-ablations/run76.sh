#!/usr/bin/env bash
# Session 12, run 76 (timing only): the rows kernel (run 73's, exp/rows) against the committed tree
# (base), and two ablations of its producers: no conversion (noconvert), no bulk copies (nostage).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "base build $?") &
for v in $VARIANTS; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "$v build $?") &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = base ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for round in 1 2; do for v in base $VARIANTS; do exe=$(exe_of $v)
  echo "$round $v tf32 $(timeout 60 $exe --precision tf32 --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done | tee $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
