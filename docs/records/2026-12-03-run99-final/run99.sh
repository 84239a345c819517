#!/usr/bin/env bash
# Run 99: the tree at its commit: build, the whole ctest suite, tools/bench_layers.py over the suite
# (without torch.compile, then with it on the layers time allows, appended), tools/bench_files.py
# (16 files of B = 1024, 4 of them also one command each), and the CUTLASS conv3d probe (built on
# this machine's twin with CUDA 13.0 and carried: tools/probes/cutlass_conv3d.sh exec).
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s); deadline=535
left() { echo $(( deadline - ($(date +%s) - start) )); }
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error" "$out/build.log" | head
wait
timeout 230 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|fused vs|config " "$out/ctest.log" | head -20
PYTHONUNBUFFERED=1 timeout $(left) python3 tools/bench_layers.py --no-compile --runs 20 --out "$out/layers" \
  >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "Geometric" "$out/layers.log"
PYTHONUNBUFFERED=1 timeout $(( $(left) - 60 )) python3 tools/bench_files.py --exe build/fused3d --files 16 --per-file 4 \
  --csv "$out/files.csv" >"$out/files.log" 2>&1; echo "bench_files exit $? after $(( $(date +%s) - start )) s"
tail -14 "$out/files.log"
timeout 90 bash tools/probes/cutlass_conv3d.sh exec >"$out/cutlass.log" 2>&1; echo "cutlass exit $? after $(( $(date +%s) - start )) s"
tail -12 "$out/cutlass.log"
PYTHONUNBUFFERED=1 timeout $(left) python3 tools/bench_layers.py --layers cin32_k3_8x32,k3,cin16_k3_pad1_64,k7 --runs 20 \
  --append --out "$out/layers" >"$out/layers_compile.log" 2>&1; echo "bench_layers compile exit $? after $(( $(date +%s) - start )) s"
grep -E "compile|Geometric" "$out/layers_compile.log" | head -12
