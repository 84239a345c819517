#!/usr/bin/env bash
# Run 115: run 114's tree with the depthwise tiles starting 0-3 columns early along W (footprints
# aligned for the tensor copy on padded layers): build it and exp/base (f95eb6c), the Python
# operator's tests under faulthandler (and gdb where one crashes), the whole ctest suite,
# compute-sanitizer memcheck and racecheck over the depthwise layers test, five depthwise layers
# through both executables (A/B, two rounds), bench_layers on the suite's depthwise layer.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
log="$out/summary.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$log"
start=$(date +%s)
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >/tmp/ext_build.log 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s"; tail -3 /tmp/ext_build.log ) | tee -a "$log" &
mkdir -p exp/base/.deps && ln -sfn "$PWD/.deps/CLI11" exp/base/.deps/CLI11 && ln -sfn "$PWD/.deps/googletest" exp/base/.deps/googletest
( cmake -S exp/base -B /tmp/base -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >/tmp/base_build.log 2>&1 &&
  cmake --build /tmp/base --target fused3d >>/tmp/base_build.log 2>&1; echo "base build exit $? after $(( $(date +%s) - start )) s" ) | tee -a "$log" &
( mkdir -p /tmp/m && cd /tmp/m && e="python3 $OLDPWD/tools/export_model.py"
  $e --out dw1.pt --in-channels 32 --out-channels 32 --conv-groups 32 --kernel-size 3 --groups 8 --batch 64 --input-out dw1_x.pt
  $e --out dw2.pt --in-channels 32 --out-channels 64 --conv-groups 32 --kernel-size 3 --groups 8 --batch 64 --input-out dw2_x.pt
  $e --out dw4.pt --in-channels 16 --out-channels 64 --conv-groups 16 --kernel-size 3 --groups 16 --batch 64 --input-out dw4_x.pt
  $e --out dw_k5s2.pt --in-channels 32 --out-channels 32 --conv-groups 32 --kernel-size 5 --stride 2 --padding 2 --groups 8 --batch 64 --spatial 16 64 64 --input-out dw_k5s2_x.pt
  $e --out dw_k7.pt --in-channels 16 --out-channels 16 --conv-groups 16 --kernel-size 7 --padding 3 --groups 4 --batch 32 --input-out dw_k7_x.pt
) >/tmp/export.log 2>&1 &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >/tmp/build.log 2>&1 && cmake --build build >>/tmp/build.log 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s" | tee -a "$log"
grep -E "error" /tmp/build.log | head | tee -a "$log"
wait; echo "builds done after $(( $(date +%s) - start )) s" | tee -a "$log"
timeout 120 python3 -X faulthandler tests/test_model_new.py -v >"$out/python.log" 2>&1; rc=$?
echo "python tests exit $rc after $(( $(date +%s) - start )) s" | tee -a "$log"
if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
  timeout 120 gdb -q -batch -ex run -ex bt --args python3 tests/test_model_new.py >>"$out/python.log" 2>&1
  echo "gdb exit $? after $(( $(date +%s) - start )) s" | tee -a "$log"
fi
timeout 200 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s" | tee -a "$log"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run|SEGFAULT" "$out/ctest.log" | head -20 | tee -a "$log"
grep -E "sweep    \]|Failure|Expected|Which is|config |error:" "$out/ctest.log" | head -30 | tee -a "$log"
for t in memcheck racecheck; do
  extra=(); [ $t = racecheck ] && extra=(--kernel-name kns=depthwise_moments_kernel)
  timeout 60 compute-sanitizer --tool $t "${extra[@]}" --error-exitcode 9 ./build/tests/fused3d_tests \
    --gtest_filter=FusedCuda.DepthwiseLayersInBothModes >/tmp/sanitize_$t.log 2>&1
  echo "$t exit $? after $(( $(date +%s) - start )) s" | tee -a "$log"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" /tmp/sanitize_$t.log | tail -3 | tee -a "$log"
  tail -c 6000 /tmp/sanitize_$t.log > "$out/sanitize_$t.tail.log"
done
for round in 1 2; do
for m in dw1 dw2 dw4 dw_k5s2 dw_k7; do
  for v in tree base; do
    exe=./build/fused3d; [ $v = base ] && exe=/tmp/base/fused3d
    printf "%s %-8s %-4s " $round $m $v
    $exe --model /tmp/m/$m.pt --input /tmp/m/${m}_x.pt --check --bench 30 2>&1 |
      grep -E "^  fused |relative L2|TFLOP|error" | sed -E 's/.*relative L2 error ([^ ]+).*/err \1/' | cut -c1-70 | tr -s ' ' | tr '\n' ' '
    echo
  done
done
done > "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s" | tee -a "$log"
PYTHONUNBUFFERED=1 timeout $(( 570 - ($(date +%s) - start) )) python3 -X faulthandler tools/bench_layers.py --layers depthwise --runs 20 \
  --out "$out/layers" >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s" | tee -a "$log"
grep -E "^\| depthwise" "$out/layers.log" | head -3 | cut -c1-400 | tee -a "$log"
