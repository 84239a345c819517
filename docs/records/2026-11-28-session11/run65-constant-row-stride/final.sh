#!/usr/bin/env bash
# ad-hoc (not kept): the record run of the tree (tools/device_bench.sh 50), then A/B against exp/base
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out/bench
t0=$(date +%s)
rm -rf /tmp/base && mkdir /tmp/base && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/base/ && cp exp/base/* /tmp/base/kernels/
(cd /tmp/base && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null 2>&1 && nice cmake --build build --target fused3d >/dev/null 2>&1; echo "base build $? ($(( $(date +%s) - t0 )) s)") &
FUSED3D_PYTHON=python3 OUT=$out/bench bash tools/device_bench.sh 50
wait; echo "bench done ($(( $(date +%s) - t0 )) s)"
for round in 1 2 3; do for v in new base; do exe=./build/fused3d; [ $v = base ] && exe=/tmp/base/build/fused3d
  for prec in tf32 accurate; do echo "$round $v $prec $($exe --precision $prec --bench 50 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
for b in 1 4096; do for v in new base; do exe=./build/fused3d; [ $v = base ] && exe=/tmp/base/build/fused3d
  echo "B=$b $v tf32 $($exe --batch $b --precision tf32 --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done | tee -a $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
