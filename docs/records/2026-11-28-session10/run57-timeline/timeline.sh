#!/usr/bin/env bash
# ad-hoc (not kept): clock64 timeline of block 0, group 0 (MMA warps per step and item, producers per step)
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >$out/cmake.log 2>&1 && cmake --build build --target fused3d >>$out/cmake.log 2>&1; echo "build $? ($(( $(date +%s) - t0 )) s)"
for prec in tf32 accurate; do
  FUSED3D_TRACE=1 timeout 60 ./build/fused3d --precision $prec --bench 30 > $out/timeline_$prec.log 2>&1
  grep -E "^  fused" $out/timeline_$prec.log | head -1
  timeout 60 ./build/fused3d --precision $prec --bench 50 2>&1 | grep -E "^  fused" | head -1
done
echo "total $(( $(date +%s) - t0 )) s"
