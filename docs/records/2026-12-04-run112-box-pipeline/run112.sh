#!/usr/bin/env bash
# Run 112: the box kernel's stage pipeline (W by bulk copies onto an mbarrier per buffer, a ring of
# four (tf32) or three (accurate) W buffers for wgmma with its steps in flight across stages,
# column offsets from the kernel's parameters and A loads as LDS [R + UR]). Build the tree and, in
# parallel, base = the tree with tree.patch reversed (HEAD, the executable only); the thirteen box
# layers through the executable in both trees and modes, alternating (A/B, `ab.log`); then the
# whole ctest suite on the tree and compute-sanitizer memcheck / racecheck over the box layers.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
here=docs/records/2026-12-04-run112-box-pipeline
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
mkdir -p /tmp/base && tar --exclude=./build --exclude=./.deps -cf - . | tar -xf - -C /tmp/base
(cd /tmp/base && git apply -R "$OLDPWD/$here/tree.patch" && mkdir -p .deps &&
  ln -sfn "$OLDPWD/.deps/CLI11" .deps/CLI11 && ln -sfn "$OLDPWD/.deps/googletest" .deps/googletest) || echo "base patch failed"
( cmake -S /tmp/base -B /tmp/base/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >"$out/base_build.log" 2>&1 &&
  cmake --build /tmp/base/build --target fused3d >>"$out/base_build.log" 2>&1; echo "base build exit $?" ) &
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $?" ) &
( mkdir -p /tmp/m && cd /tmp/m && e="python3 $OLDPWD/tools/export_model.py"
  $e --out cin32.pt --in-channels 32 --out-channels 64 --kernel-size 3 --groups 8 --batch 64 --spatial 8 32 32 --input-out cin32_x.pt
  $e --out cin16.pt --in-channels 16 --out-channels 64 --kernel-size 3 --padding 1 --groups 16 --batch 32 --spatial 16 64 64 --input-out cin16_x.pt
  $e --out c64.pt --in-channels 3 --out-channels 64 --kernel-size 3 --padding 1 --groups 32 --batch 8 --spatial 16 112 112 --input-out c64_x.pt
  $e --out k1.pt --in-channels 32 --out-channels 64 --kernel-size 1 --groups 8 --batch 128 --input-out k1_x.pt
  $e --out cin8.pt --in-channels 8 --out-channels 32 --kernel-size 3 --groups 8 --batch 256 --input-out cin8_x.pt
  $e --out c32k4.pt --in-channels 3 --out-channels 32 --kernel-size 4 --groups 8 --batch 512 --input-out c32k4_x.pt
  $e --out k133.pt --in-channels 8 --out-channels 32 --kernel-size 1,3,3 --padding 0,1,1 --groups 8 --batch 128 --input-out k133_x.pt
  $e --out k3.pt --in-channels 3 --out-channels 16 --kernel-size 3 --groups 4 --batch 1024 --input-out k3_x.pt
  $e --out s2.pt --in-channels 3 --out-channels 16 --kernel-size 3 --stride 2 --padding 1 --groups 4 --batch 256 --spatial 16 64 64 --input-out s2_x.pt
  $e --out k7.pt --in-channels 4 --out-channels 16 --kernel-size 7 --padding 3 --groups 4 --batch 64 --input-out k7_x.pt
  $e --out k5.pt --in-channels 3 --out-channels 16 --kernel-size 5 --groups 4 --batch 512 --input-out k5_x.pt
  $e --out k315.pt --in-channels 3 --out-channels 16 --kernel-size 3,1,5 --groups 4 --batch 256 --input-out k315_x.pt
  $e --out cg4.pt --in-channels 32 --out-channels 64 --kernel-size 3 --groups 8 --conv-groups 4 --batch 64 --input-out cg4_x.pt
) >"$out/export.log" 2>&1 &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error|warning" "$out/build.log" | head
wait; echo "builds done after $(( $(date +%s) - start )) s"
for m in cin32 cin16 c64 k1 cin8 c32k4 k133 k3 s2 k7 k5 k315 cg4; do
  for p in tf32 accurate; do
    for v in tree base; do
      [ $(( $(date +%s) - start )) -gt 250 ] && break 3
      exe=./build/fused3d; [ $v = base ] && exe=/tmp/base/build/fused3d
      printf "%-6s %-4s %-8s " $m $v $p
      timeout 30 $exe --model /tmp/m/$m.pt --input /tmp/m/${m}_x.pt --precision $p --check --bench 30 2>&1 |
        grep -E "^  fused |relative L2|^fused3d: kernel|rror" | sed -E 's/.*relative L2 error ([^ ]+).*/err \1/; s/^fused3d: kernel +([^ ]+).*/\1/' |
        cut -c1-90 | tr -s ' ' | tr '\n' ' '
      echo
    done
  done
done | tee "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s"
timeout 220 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|config |error:" "$out/ctest.log" | head -30
for t in memcheck racecheck; do
  [ $(( $(date +%s) - start )) -gt 520 ] && break
  extra=(); [ $t = racecheck ] && extra=(--kernel-name kns=igemm_box_moments_kernel)
  timeout 45 compute-sanitizer --tool $t "${extra[@]}" --error-exitcode 9 ./build/tests/fused3d_tests \
    --gtest_filter=FusedCuda.ImplicitGemmLayersInBothModes >"$out/sanitize_$t.log" 2>&1
  echo "$t exit $? after $(( $(date +%s) - start )) s"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$out/sanitize_$t.log" | tail -3
  tail -c 20000 "$out/sanitize_$t.log" > "$out/sanitize_$t.tail.log"; rm -f "$out/sanitize_$t.log"
done
