#!/usr/bin/env bash
# Run 101, first call: the tree at its commit: build, the whole ctest suite, tools/bench_layers.py
# over the suite without torch.compile (the second call, run101b.sh, adds it on five layers).
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error" "$out/build.log" | head
wait
timeout 240 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|fused vs|config " "$out/ctest.log" | head -20
PYTHONUNBUFFERED=1 timeout $(( 585 - ($(date +%s) - start) )) python3 tools/bench_layers.py --no-compile --runs 20 \
  --out "$out/layers" >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "Geometric" "$out/layers.log"
