#!/usr/bin/env bash
# Session 14, run 90: the working tree (tree: the B = 1 kernel's own epilogue a warp per (sample,
# group) with its lanes over the group's channels and the tiles, as the epilogue kernel since
# 5e213aa, instead of a half-warp per (sample, group) over tiles) against b2afd74 (base, 5e213aa's code), built in
# the same call. The planes kernel's SASS is the same in both (checked locally). GPU tests of the
# tree; timing at B = 1, 7, 64 (the mma.sync kernel) and 1024. exp/ is not in the repository.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
V="base"
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d fused3d_tests >$out/build.log 2>&1; echo "tree build $?"; tail -1 $out/build.log) &
for v in $V; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp -r exp/$v/. /tmp/$v/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/tmp/$v.build.log 2>&1; echo "$v build $?"; tail -1 /tmp/$v.build.log) &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for prec in accurate tf32; do for b in 1 7; do echo "tree B=$b $(timeout 60 ./build/fused3d --batch $b --precision $prec --check 2>&1 | grep -E 'kernel|check|rror' | tr '\n' ' ')"; done; done
timeout 300 ./build/tests/fused3d_tests --gtest_filter='FusedCuda.*:-FusedCuda.MatchesPyTorchOutputSavedByTheExporter' >$out/gpu_tests_tree.log 2>&1; echo "tree gpu tests exit $?"
grep -E "^\[  (PASSED|FAILED) |FAILED|Failure|Which is|vs |sweep" $out/gpu_tests_tree.log | head -12
echo "tests done ($(( $(date +%s) - t0 )) s)"
for round in 1 2 3; do for b in 1 7 64; do for v in base tree; do for prec in accurate tf32; do
  echo "$round B=$b $v $prec $(timeout 60 $(exe_of $v) --batch $b --precision $prec --bench 50 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done; done | tee $out/ab.log
for v in base tree; do for prec in accurate tf32; do
  echo "B=1024 $v $prec $(timeout 60 $(exe_of $v) --precision $prec --bench 50 2>&1 | grep -E '^  (fused|speedup)' | head -2 | tr -s ' ' | tr '\n' ' ')"; done; done | tee -a $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
