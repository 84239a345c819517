#!/usr/bin/env bash
# Run 98: the implicit-GEMM kernel with m16n8k16 MMAs for float16 / bfloat16 inputs and integer TF32
# rounding: build (and exp/lb3, the same tree with __launch_bounds__(128, 3), in parallel), the
# whole ctest suite, five layers through the executable in both trees (A/B), tools/bench_layers.py
# over the suite without torch.compile, and the CUTLASS probe where its headers were carried.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
( PYTHONPATH=tools python3 -c "import fused3d_torch; fused3d_torch.load_extension()" >"$out/ext_build.log" 2>&1
  echo "extension build exit $? after $(( $(date +%s) - start )) s" ) &
mkdir -p exp/lb3/.deps && ln -sfn "$PWD/.deps/CLI11" exp/lb3/.deps/CLI11 && ln -sfn "$PWD/.deps/googletest" exp/lb3/.deps/googletest
( cmake -S exp/lb3 -B /tmp/lb3 -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >"$out/lb3_build.log" 2>&1 &&
  cmake --build /tmp/lb3 --target fused3d >>"$out/lb3_build.log" 2>&1; echo "lb3 build exit $?" ) &
( mkdir -p /tmp/m && cd /tmp/m && e="python3 $OLDPWD/tools/export_model.py"
  $e --out cin32.pt --in-channels 32 --out-channels 64 --kernel-size 3 --groups 8 --batch 64 --spatial 8 32 32 --input-out cin32_x.pt
  $e --out cin16.pt --in-channels 16 --out-channels 64 --kernel-size 3 --padding 1 --groups 16 --batch 32 --spatial 16 64 64 --input-out cin16_x.pt
  $e --out k3.pt --in-channels 3 --out-channels 16 --kernel-size 3 --groups 4 --batch 1024 --input-out k3_x.pt
  $e --out f16.pt --in-channels 16 --out-channels 32 --kernel-size 3 --groups 8 --batch 64 --dtype float16 --input-out f16_x.pt
  $e --out c64.pt --in-channels 3 --out-channels 64 --kernel-size 3 --padding 1 --groups 32 --batch 8 --spatial 16 112 112 --input-out c64_x.pt
) >"$out/export.log" 2>&1 &
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
grep -E "error" "$out/build.log" | head
wait; echo "builds done after $(( $(date +%s) - start )) s"
timeout 240 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "sweep    \]|Failure|Expected|Which is|fused vs|config " "$out/ctest.log" | head -30
for m in cin32 cin16 k3 f16 c64; do
  for v in tree lb3; do
    exe=./build/fused3d; [ $v = lb3 ] && exe=/tmp/lb3/fused3d
    for p in accurate tf32; do
      printf "%-6s %-4s %-8s " $m $v $p
      $exe --model /tmp/m/$m.pt --input /tmp/m/${m}_x.pt --precision $p --check --bench 30 2>&1 |
        grep -E "^  fused |relative L2" | sed -E 's/.*relative L2 error ([^ ]+).*/err \1/' | tr -s ' ' | tr '\n' ' '
      echo
    done
  done
done | tee "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s"
if [ -d .deps/cutlass ]; then timeout 120 bash tools/probes/cutlass_conv3d.sh >"$out/cutlass.log" 2>&1; echo "cutlass exit $?"; tail -20 "$out/cutlass.log"; fi
left=$(( 575 - ($(date +%s) - start) ))
PYTHONUNBUFFERED=1 timeout $left python3 tools/bench_layers.py --no-compile --runs 20 --out "$out/layers" \
  >"$out/layers.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "^\| [a-z]" "$out/layers.log" | head -22 | cut -c1-300
grep -E "Geometric" "$out/layers.log"
