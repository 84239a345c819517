#!/usr/bin/env bash
# ad-hoc (not kept): source-level ncu profile of base (tf32, B=512), then A/B of the tree vs base
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
cmake --build build --target fused3d > $out/build.log 2>&1 || { FUSED3D_PYTHON=python3 bash tools/bootstrap.sh run > $out/build.log 2>&1; }
echo "tree build $? ($(( $(date +%s) - t0 )) s)"
for v in $VARIANTS; do
  [ -x /tmp/$v/build/fused3d ] && cmp -s exp/$v/conv3d_k4_tensorcore.cu /tmp/$v/kernels/conv3d_k4_tensorcore.cu && continue
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp exp/$v/* /tmp/$v/kernels/
  (cd /tmp/$v && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null 2>&1 && cmake --build build --target fused3d >/dev/null) &
done; wait; echo "variant builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = new ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
./build/fused3d --precision tf32 --check --bench 5 2>&1 | grep -E "check"
./build/fused3d --precision accurate --check --bench 5 2>&1 | grep -E "check"
for v in $PROFILE; do for prec in tf32; do
  timeout 200 ncu --clock-control none -k regex:conv_k4 --launch-skip 3 --launch-count 1 --section SourceCounters --section InstructionStats \
    --section WarpStateStats --section SchedulerStats --import-source yes -o $out/prof_${v}_$prec $(exe_of $v) --batch 512 --precision $prec --bench 5 > $out/ncu_${v}_$prec.log 2>&1
  ncu -i $out/prof_${v}_$prec.ncu-rep --page source --csv --print-source sass > $out/source_${v}_$prec.csv 2>/dev/null; gzip $out/source_${v}_$prec.csv
  ncu -i $out/prof_${v}_$prec.ncu-rep --page details --csv > $out/details_${v}_$prec.csv 2>/dev/null; rm -f $out/prof_${v}_$prec.ncu-rep
done; done
echo "ncu done ($(( $(date +%s) - t0 )) s)"
for round in 1 2; do for v in new $VARIANTS; do exe=$(exe_of $v)
  for prec in tf32 accurate; do echo "$round $v $prec $($exe --precision $prec --bench ${RUNS:-50} 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
