#!/usr/bin/env bash
# Run 96: the implicit-GEMM kernel's first GPU run: build, the GPU tests (FusedCuda, Indexing), the
# standard layer in both modes, then tools/bench_layers.py over the suite without torch.compile
# (the Python extension builds in the background meanwhile).
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error" "$out/build.log" | head
timeout 200 ./build/tests/fused3d_tests --gtest_filter='FusedCuda.*:Indexing.*' >"$out/gpu_tests.log" 2>&1
echo "gpu tests exit $? after $(( $(date +%s) - start )) s"
grep -E "^\[  (FAILED|PASSED) |sweep    \]|Failure|Expected|Which is|fused vs|Value of|config " "$out/gpu_tests.log" | head -40
for p in accurate tf32; do
  ./build/fused3d --precision $p --check --bench 50 2>&1 | grep -E "kernel|^  (fused|native) |relative L2" | tr -s ' '
done | tee "$out/standard.log"
wait
left=$(( 570 - ($(date +%s) - start) ))
PYTHONUNBUFFERED=1 timeout $left python3 tools/bench_layers.py --no-compile --runs 20 --out "$out/layers" \
  >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -vE "Warning|warn" "$out/layers.log" | tail -45
