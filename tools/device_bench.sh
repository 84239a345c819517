#!/usr/bin/env bash
# On the GPU machine: build, run the whole test suite, then fused3d --bench in both modes at the
# standard batch and over a batch sweep. Logs go to $OUT (the device tool) or ./device-logs.
#   FUSED3D_PYTHON=python3 bash tools/device_bench.sh [runs]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-logs}
mkdir -p "$out"
runs=${1:-100}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
bash tools/bootstrap.sh test >"$out/ctest.log" 2>&1; echo "ctest exit $?"; tail -4 "$out/ctest.log"
grep -E "Skipped|Failed" "$out/ctest.log" | head
# What ctest does not show: the sweep's seed, the 2^31-element run's kernels, float16/bfloat16 errors.
./build/tests/fused3d_tests --gtest_filter='FusedCuda.RandomizedSweep*:FusedCuda.Float16*:FusedCuda.InputOver*' \
  >"$out/gpu_tests_detail.log" 2>&1
grep -E "sweep|info|PASSED|FAILED" "$out/gpu_tests_detail.log"
for precision in accurate tf32; do
  ./build/fused3d --precision "$precision" --check --bench "$runs" 2>&1 | tee "$out/bench_$precision.log" | grep -E "kernel|check|fused |native |speedup|floor|at "
done
for batch in 1 7 64 333 1024 4096; do
  for precision in accurate tf32; do
    printf "B=%-5s %-8s " "$batch" "$precision"
    ./build/fused3d --batch "$batch" --precision "$precision" --bench "$runs" 2>&1 | grep -E "^  (fused|native) " | tr -s ' ' | tr '\n' ' '
    echo
  done
done | tee "$out/sweep.log"
