#!/usr/bin/env bash
# Run 113: 02edfcb (the box kernel's stage pipeline): build, the whole ctest
# suite, compute-sanitizer memcheck and racecheck over the implicit-GEMM layers test (both box
# paths, wgmma and mma.sync, and the gather kernel), then tools/bench_layers.py over the suite
# without torch.compile and with the gather kernel timed beside it (--also-kernel igemm), then with
# torch.compile on the layers where it can be PyTorch's best, appended.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
left() { echo $(( 560 - ($(date +%s) - start) )); }
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error|warning" "$out/build.log" | head
wait
timeout 200 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|fused vs|config |error:" "$out/ctest.log" | head -30
for t in memcheck racecheck; do
  extra=(); [ $t = racecheck ] && extra=(--kernel-name kns=igemm_box_moments_kernel)
  timeout 60 compute-sanitizer --tool $t "${extra[@]}" --error-exitcode 9 ./build/tests/fused3d_tests \
    --gtest_filter=FusedCuda.ImplicitGemmLayersInBothModes >"$out/sanitize_$t.log" 2>&1
  echo "$t exit $? after $(( $(date +%s) - start )) s"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$out/sanitize_$t.log" | tail -3
  tail -c 20000 "$out/sanitize_$t.log" > "$out/sanitize_$t.tail.log"; rm -f "$out/sanitize_$t.log"
done
PYTHONUNBUFFERED=1 timeout $(( $(left) - 140 )) python3 tools/bench_layers.py --no-compile --runs 20 --also-kernel igemm \
  --out "$out/layers" >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "Geometric|failed" "$out/layers.log" | head
grep -E "^[a-z0-9_]+ \(" "$out/layers.log" | sed -E 's/ \(Cin.*s\): / /' | cut -c1-260
PYTHONUNBUFFERED=1 timeout $(left) python3 tools/bench_layers.py --layers cin32_k3_8x32,cin16_k3_pad1_64,k7,depthwise,k3 \
  --runs 20 --append --out "$out/layers" >"$out/layers_compile.log" 2>&1; echo "bench_layers compile exit $? after $(( $(date +%s) - start )) s"
grep -E "^[a-z0-9_]+ \(" "$out/layers_compile.log" | grep -o "compile tf32 [0-9.]*" | head
