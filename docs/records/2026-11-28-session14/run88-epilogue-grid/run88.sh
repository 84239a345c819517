#!/usr/bin/env bash
# Session 14, run 88: the working tree (tree: the warp-per-(sample, group) epilogue kernel of 5e213aa with
# blocks over samples x groups (no 64-bit division) and pointer steps over the tiles) against
# 5e213aa (base) and t128 (tree with 128-thread epilogue blocks), built in the same call.
# GPU tests of the tree, timing, ncu durations of the epilogue kernels. exp/ is not in the repository.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
V="base t128"
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d fused3d_tests >$out/build.log 2>&1; echo "tree build $?"; tail -1 $out/build.log) &
for v in $V; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp -r exp/$v/. /tmp/$v/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/tmp/$v.build.log 2>&1; echo "$v build $?"; tail -1 /tmp/$v.build.log) &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for prec in accurate tf32; do for b in 1024 7; do echo "tree B=$b $(timeout 60 ./build/fused3d --batch $b --precision $prec --check 2>&1 | grep -E 'check|rror' | tr '\n' ' ')"; done; done
timeout 300 ./build/tests/fused3d_tests --gtest_filter='FusedCuda.*:-FusedCuda.MatchesPyTorchOutputSavedByTheExporter' >$out/gpu_tests_tree.log 2>&1; echo "tree gpu tests exit $?"
grep -E "^\[  (PASSED|FAILED) |FAILED|Failure|Which is|vs |sweep" $out/gpu_tests_tree.log | head -12
for v in base tree t128; do
  timeout 120 ncu --clock-control none -k regex:"epilogue" --launch-skip 6 --launch-count 3 --metrics gpu__time_duration.sum,smsp__inst_executed.sum $(exe_of $v) --precision tf32 --bench 5 >$out/ncu_$v.log 2>&1
  echo "ncu $v: $(grep -E 'gpu__time_duration|inst_executed' $out/ncu_$v.log | tr -s ' ' | tr '\n' ' ')"
done
for round in 1 2 3; do for v in base tree t128; do for prec in tf32 accurate; do
  echo "$round $v $prec $(timeout 60 $(exe_of $v) --precision $prec --bench 50 2>&1 | grep -E '^  (fused|speedup)' | head -2 | tr -s ' ' | tr '\n' ' ')"; done; done; done | tee $out/ab.log
for b in 64 333 4096; do for v in base tree; do for prec in tf32 accurate; do
  echo "B=$b $v $prec $(timeout 60 $(exe_of $v) --batch $b --precision $prec --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee -a $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
