#!/usr/bin/env bash
# Run 94: the tree after run 93's findings (the planes kernel's unscale in its parameters, the
# moments kernels as programmatic dependents of the sample-terms kernel) against 04e43ac (exp/base)
# built and run in the same call (B = 1024 two rounds, B = 64 and 1 one round, both modes); the whole
# ctest suite; then tools/bench.py over the batch sweep against PyTorch's options (run 95's part).
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
{ ab 1 1024; ab 1 64; ab 1 1; ab 2 1024; } | tee "$out/ab.log"
echo "a/b done after $(( $(date +%s) - start )) s"
timeout 200 ctest --test-dir build --output-on-failure -j 16 >"$out/ctest.log" 2>&1; echo "ctest exit $? after $(( $(date +%s) - start )) s"
grep -E "tests passed|\(Failed\)|\(Skipped\)|Timeout|Not Run" "$out/ctest.log" | head -20
grep -E "TORCH_CUDA_ARCH_LIST|sweep    \]" "$out/ctest.log" | head -12
left=$(( 560 - ($(date +%s) - start) ))
PYTHONUNBUFFERED=1 timeout $left python3 tools/bench.py --exe build/fused3d --runs 30 --out "$out/bench" 2>&1 |
  grep -v Warning >"$out/bench_py.log"; echo "bench.py exit $? after $(( $(date +%s) - start )) s"
tail -22 "$out/bench_py.log"
