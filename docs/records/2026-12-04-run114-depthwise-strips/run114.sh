#!/usr/bin/env bash
# Run 114: the depthwise kernel with column strips (4 / multiplier neighbouring columns per thread,
# vector loads of the strip's window) and the footprint by one tensor copy, against exp/base (the
# tree at f95eb6c): build both, the whole ctest suite, compute-sanitizer memcheck and racecheck
# over the depthwise layers test, five layers with one input channel per group through both
# executables (A/B, alternating, two rounds), bench_layers on the suite's depthwise layer with
# torch.compile.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
mkdir -p exp/base/.deps && ln -sfn "$PWD/.deps/CLI11" exp/base/.deps/CLI11 && ln -sfn "$PWD/.deps/googletest" exp/base/.deps/googletest
( cmake -S exp/base -B /tmp/base -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >"$out/base_build.log" 2>&1 &&
  cmake --build /tmp/base --target fused3d >>"$out/base_build.log" 2>&1; echo "base build exit $? after $(( $(date +%s) - start )) s" ) &
( mkdir -p /tmp/m && cd /tmp/m && e="python3 $OLDPWD/tools/export_model.py"
  $e --out dw1.pt --in-channels 32 --out-channels 32 --conv-groups 32 --kernel-size 3 --groups 8 --batch 64 --input-out dw1_x.pt
  $e --out dw2.pt --in-channels 32 --out-channels 64 --conv-groups 32 --kernel-size 3 --groups 8 --batch 64 --input-out dw2_x.pt
  $e --out dw4.pt --in-channels 16 --out-channels 64 --conv-groups 16 --kernel-size 3 --groups 16 --batch 64 --input-out dw4_x.pt
  $e --out dw_k5s2.pt --in-channels 32 --out-channels 32 --conv-groups 32 --kernel-size 5 --stride 2 --padding 2 --groups 8 --batch 64 --spatial 16 64 64 --input-out dw_k5s2_x.pt
  $e --out dw_k7.pt --in-channels 16 --out-channels 16 --conv-groups 16 --kernel-size 7 --padding 3 --groups 4 --batch 32 --input-out dw_k7_x.pt
) >"$out/export.log" 2>&1 &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error|warning" "$out/build.log" | head
wait; echo "builds done after $(( $(date +%s) - start )) s"
timeout 200 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|config |error:" "$out/ctest.log" | head -30
for t in memcheck racecheck; do
  extra=(); [ $t = racecheck ] && extra=(--kernel-name kns=depthwise_moments_kernel)
  timeout 60 compute-sanitizer --tool $t "${extra[@]}" --error-exitcode 9 ./build/tests/fused3d_tests \
    --gtest_filter=FusedCuda.DepthwiseLayersInBothModes >"$out/sanitize_$t.log" 2>&1
  echo "$t exit $? after $(( $(date +%s) - start )) s"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$out/sanitize_$t.log" | tail -3
  tail -c 20000 "$out/sanitize_$t.log" > "$out/sanitize_$t.tail.log"; rm -f "$out/sanitize_$t.log"
done
for round in 1 2; do
for m in dw1 dw2 dw4 dw_k5s2 dw_k7; do
  for v in tree base; do
    exe=./build/fused3d; [ $v = base ] && exe=/tmp/base/fused3d
    printf "%s %-8s %-4s " $round $m $v
    $exe --model /tmp/m/$m.pt --input /tmp/m/${m}_x.pt --check --bench 30 2>&1 |
      grep -E "^  fused |relative L2|TFLOP" | sed -E 's/.*relative L2 error ([^ ]+).*/err \1/' | cut -c1-70 | tr -s ' ' | tr '\n' ' '
    echo
  done
done
done | tee "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s"
PYTHONUNBUFFERED=1 timeout $(( 560 - ($(date +%s) - start) )) python3 tools/bench_layers.py --layers depthwise --runs 20 \
  --out "$out/layers" >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "^\| depthwise" "$out/layers.log" | head -3 | cut -c1-400
