#!/usr/bin/env bash
# ad-hoc (not kept): are the two groups' item ends in phase? does a start offset for group 1 help?
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >$out/cmake.log 2>&1 && cmake --build build --target fused3d >>$out/cmake.log 2>&1; echo "build $? ($(( $(date +%s) - t0 )) s)"
for d in 0 5700; do echo "== trace delay $d"; FUSED3D_TRACE=1 FUSED3D_PHASE_DELAY=$d ./build/fused3d --precision tf32 --bench 30 2>&1 | grep trace; done | tee $out/trace.log | awk 'NR%4==1 || /==/'
for round in 1 2; do for d in 0 2000 4000 6000 8000; do
  echo "$round delay $d tf32 $(FUSED3D_PHASE_DELAY=$d ./build/fused3d --precision tf32 --bench 50 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done
  for d in 0 6000; do echo "$round delay $d accurate $(FUSED3D_PHASE_DELAY=$d ./build/fused3d --precision accurate --bench 50 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done | tee $out/delay.log
echo "total $(( $(date +%s) - t0 )) s"
