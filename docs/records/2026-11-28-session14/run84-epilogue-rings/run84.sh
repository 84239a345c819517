#!/usr/bin/env bash
# Session 14, run 84: HEAD (9968d35) = tree, confirmed by the GPU tests, against variants built in the
# same call: epi (the epilogue per (sample, group), + a __syncwarp before the fallback's release),
# noepi (no epilogue kernel: results wrong, its cost in the stream), in6 / in7 (6 / 7 input planes
# in flight), in5p12 (5 input planes, 12 pair planes); the three ring variants with kMaxSharedBytes
# 224 KB. exp/<variant>/ holds the changed files; exp/ is not in the repository.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
V="epi noepi in6 in7 in5p12"
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d fused3d_tests >$out/build.log 2>&1; echo "tree build $?") &
for v in $V; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp -r exp/$v/. /tmp/$v/
  targets=fused3d; [ $v = epi ] && targets="fused3d fused3d_tests"
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target $targets >/tmp/$v.build.log 2>&1; echo "$v build $?"; tail -3 /tmp/$v.build.log) &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for v in tree epi in6 in7 in5p12; do for prec in accurate tf32; do echo "$v $(timeout 60 $(exe_of $v) --precision $prec --check 2>&1 | grep -E 'check|rror' | tr '\n' ' ')"; done; done
for v in tree epi; do
  t=./build/tests/fused3d_tests; [ $v = epi ] && t=/tmp/epi/build/tests/fused3d_tests
  timeout 300 $t --gtest_filter='FusedCuda.*:-FusedCuda.MatchesPyTorchOutputSavedByTheExporter' >$out/gpu_tests_$v.log 2>&1; echo "$v gpu tests exit $?"
  grep -E "^\[  (PASSED|FAILED) |FAILED|Failure|Which is|vs " $out/gpu_tests_$v.log | head -12
done
echo "tests done ($(( $(date +%s) - t0 )) s)"
for round in 1 2; do for v in tree epi noepi in6 in7 in5p12; do for prec in tf32 accurate; do
  echo "$round $v $prec $(timeout 60 $(exe_of $v) --precision $prec --bench 50 2>&1 | grep -E '^  (fused|speedup)' | head -2 | tr -s ' ' | tr '\n' ' ')"; done; done; done | tee $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
