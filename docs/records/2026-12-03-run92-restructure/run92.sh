#!/usr/bin/env bash
# Run 92: the restructured tree (kernels split by what they are, rings, the x pivots) on the GPU:
# the standard layer's timings against 04e43ac (exp/base, a copy of that commit's sources) built
# and run in the same call (B = 1024 three rounds, B = 64 and 1 one round, both modes), then the
# whole ctest suite.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
mkdir -p exp/base/.deps && ln -sfn "$PWD/.deps/CLI11" exp/base/.deps/CLI11 && ln -sfn "$PWD/.deps/googletest" exp/base/.deps/googletest
( cmake -S exp/base -B /tmp/base -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >"$out/base_build.log" 2>&1 &&
  cmake --build /tmp/base --target fused3d >>"$out/base_build.log" 2>&1; echo "base build exit $?" ) &
start=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build >>"$out/build.log" 2>&1; echo "tree build exit $? after $(( $(date +%s) - start )) s"
wait; echo "builds done after $(( $(date +%s) - start )) s"
ab() {  # round batch
  for v in tree base; do
    exe=./build/fused3d; [ $v = base ] && exe=/tmp/base/fused3d
    for p in accurate tf32; do
      printf "round %s B=%-5s %-4s %-8s " $1 $2 $v $p
      $exe --batch $2 --precision $p --check --bench 50 2>&1 | grep -E "^  (fused|native) |relative L2" |
        sed -E 's/.*relative L2 error ([^ ]+).*/err \1/' | tr -s ' ' | tr '\n' ' '
      echo
    done
  done
}
{ ab 1 1024; ab 1 64; ab 1 1; ab 2 1024; ab 3 1024; } | tee "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s"
timeout 330 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "TORCH_CUDA_ARCH_LIST|sweep    \]" "$out/ctest.log" | head -12
