#!/usr/bin/env bash
# Session 12, run 67: the tf32 mode on wgmma (tree) against 617ebfc/a681589's kernels (exp/base),
# built and timed in the same call; the tree's GPU tests.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build >$out/build.log 2>&1; echo "tree build $?") &
for v in $VARIANTS; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null 2>&1; echo "$v build $?") &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
tail -3 $out/build.log
./build/fused3d --precision tf32 --check 2>&1 | tail -4
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for round in 1 2; do for v in tree $VARIANTS; do exe=$(exe_of $v)
  for prec in tf32 accurate; do echo "$round $v $prec $(timeout 60 $exe --precision $prec --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
for b in 1 7 333; do echo "B=$b tree tf32 $(timeout 60 ./build/fused3d --batch $b --precision tf32 --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done | tee -a $out/ab.log
(cd build && timeout 400 ctest --output-on-failure -j1 >$out/ctest.log 2>&1; echo "ctest exit $?"); tail -5 $out/ctest.log; grep -E "Failed|\*\*\*" $out/ctest.log | head -20
echo "total $(( $(date +%s) - t0 )) s"
