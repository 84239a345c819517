#!/usr/bin/env bash
# ad-hoc (not kept): ablations (timing only) of the producers' conversion, their copies, and the per-step weight loads
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
(cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "tree build $?") &
for v in $VARIANTS; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "$v build $?") &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = base ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for round in 1 2; do for v in base $VARIANTS; do exe=$(exe_of $v)
  for prec in tf32 accurate; do echo "$round $v $prec $(timeout 60 $exe --precision $prec --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
