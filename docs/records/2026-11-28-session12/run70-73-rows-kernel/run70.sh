#!/usr/bin/env bash
# Session 12, run 70: the rows kernel (tf32 on wgmma m64n64k16) in the tree against a681589's kernels
# (exp/base): correctness (--check, the GPU tests) and timing in the same call.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d fused3d_tests >$out/build.log 2>&1; echo "tree build $?") &
for v in $VARIANTS; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "$v build $?") &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
grep -E "error" $out/build.log | head
for prec in tf32 accurate; do timeout 60 ./build/fused3d --precision $prec --check 2>&1 | grep -E "kernel|check"; done
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for round in 1 2; do for v in tree $VARIANTS; do exe=$(exe_of $v)
  for prec in tf32 accurate; do echo "$round $v $prec $(timeout 60 $exe --precision $prec --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
for b in 1 7 333 4096; do echo "B=$b tree tf32 $(timeout 60 ./build/fused3d --batch $b --precision tf32 --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done | tee -a $out/ab.log
timeout 300 ./build/tests/fused3d_tests --gtest_filter='FusedCuda.*' >$out/gpu_tests.log 2>&1; echo "gpu tests exit $?"
grep -E "^\[  (PASSED|FAILED) |FAILED|Failure|error" $out/gpu_tests.log | head -30
echo "total $(( $(date +%s) - t0 )) s"
