#!/usr/bin/env bash
# ad-hoc A/B/C (not kept): working tree vs exp/<variant> kernels, same machine, alternating rounds
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
variants=${VARIANTS:-base}
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
FUSED3D_PYTHON=python3 bash tools/bootstrap.sh test > $out/ctest.log 2>&1; echo "ctest exit $? ($(( $(date +%s) - t0 )) s)"
tail -3 $out/ctest.log; grep -E "\(Failed\)|\*\*\*Failed|Skipped" $out/ctest.log | head
for v in $variants; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null && cmake --build build --target fused3d >/dev/null) &
done; wait; echo "variant builds ($(( $(date +%s) - t0 )) s)"
./build/fused3d --precision tf32 --check --bench 20 2>&1 | grep -E "kernel|check" | head -4
exe_of() { if [ $1 = new ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for round in 1 2; do for v in new $variants; do exe=$(exe_of $v)
  for prec in tf32 accurate; do echo "$round $v $prec $($exe --precision $prec --bench ${RUNS:-50} 2>&1 | grep -E '^  fused' | tr -s ' ')"; done; done; done | tee $out/ab.log
for b in 1 4096; do for v in new $variants; do exe=$(exe_of $v)
  echo "B=$b $v tf32 $($exe --batch $b --precision tf32 --bench 30 2>&1 | grep -E '^  fused' | tr -s ' ')"; done; done | tee -a $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
