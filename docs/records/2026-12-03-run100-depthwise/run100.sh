#!/usr/bin/env bash
# Run 100: the depthwise kernel (kernels/conv3d_depthwise.cu): build (and exp/nodw, the same tree
# whose plan never picks it, in parallel), the whole ctest suite, five layers with one input channel
# per conv group through the executable in both trees (A/B), and tools/bench_layers.py on the
# suite's depthwise layer with torch.compile.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
mkdir -p exp/nodw/.deps && ln -sfn "$PWD/.deps/CLI11" exp/nodw/.deps/CLI11 && ln -sfn "$PWD/.deps/googletest" exp/nodw/.deps/googletest
( cmake -S exp/nodw -B /tmp/nodw -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >"$out/nodw_build.log" 2>&1 &&
  cmake --build /tmp/nodw --target fused3d >>"$out/nodw_build.log" 2>&1; echo "nodw build exit $?" ) &
( mkdir -p /tmp/m && cd /tmp/m && e="python3 $OLDPWD/tools/export_model.py"
  $e --out dw1.pt --in-channels 32 --out-channels 32 --conv-groups 32 --kernel-size 3 --groups 8 --batch 64 --input-out dw1_x.pt
  $e --out dw2.pt --in-channels 32 --out-channels 64 --conv-groups 32 --kernel-size 3 --groups 8 --batch 64 --input-out dw2_x.pt
  $e --out dw4.pt --in-channels 16 --out-channels 64 --conv-groups 16 --kernel-size 3 --groups 16 --batch 64 --input-out dw4_x.pt
  $e --out dw_k5s2.pt --in-channels 32 --out-channels 32 --conv-groups 32 --kernel-size 5 --stride 2 --padding 2 --groups 8 --batch 64 --spatial 16 64 64 --input-out dw_k5s2_x.pt
  $e --out dw_k7.pt --in-channels 16 --out-channels 16 --conv-groups 16 --kernel-size 7 --padding 3 --groups 4 --batch 32 --input-out dw_k7_x.pt
) >"$out/export.log" 2>&1 &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error" "$out/build.log" | head
wait; echo "builds done after $(( $(date +%s) - start )) s"
timeout 240 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|fused vs|config " "$out/ctest.log" | head -30
for m in dw1 dw2 dw4 dw_k5s2 dw_k7; do
  for v in tree nodw; do
    exe=./build/fused3d; [ $v = nodw ] && exe=/tmp/nodw/fused3d
    for p in accurate tf32; do
      printf "%-8s %-4s %-8s " $m $v $p
      $exe --model /tmp/m/$m.pt --input /tmp/m/${m}_x.pt --precision $p --check --bench 30 2>&1 |
        grep -E "^fused3d: kernel|^  fused |^  native|relative L2" | sed -E 's/.*relative L2 error ([^ ]+).*/err \1/' | cut -c1-60 | tr -s ' ' | tr '\n' ' '
      echo
    done
  done
done | tee "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s"
left=$(( 570 - ($(date +%s) - start) ))
PYTHONUNBUFFERED=1 timeout $left python3 tools/bench_layers.py --layers depthwise,standard,k3 --runs 20 --out "$out/layers" \
  >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "^\| [a-z]" "$out/layers.log" | head -8 | cut -c1-300
