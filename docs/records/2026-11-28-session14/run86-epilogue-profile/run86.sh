#!/usr/bin/env bash
# Session 14, run 86: why the epilogue kernel takes ~10-14 us for 5 MB of partials. The working tree
# (tree: a warp per sample, loads through L2 only) and plainld (the same with plain loads), ncu's
# full set on one epilogue launch of each, timing. exp/ is not in the repository.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
V="plainld"
cfg="-G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a"
(cmake -S . -B build $cfg >$out/cfg.log 2>&1 && cmake --build build --target fused3d >$out/build.log 2>&1; echo "tree build $?"; tail -1 $out/build.log) &
for v in $V; do
  rm -rf /tmp/$v && mkdir /tmp/$v && cp -r CMakeLists.txt src include kernels tests tools .deps /tmp/$v/ && cp -r exp/$v/. /tmp/$v/
  (cd /tmp/$v && cmake -S . -B build $cfg >/dev/null 2>&1 && cmake --build build --target fused3d >/tmp/$v.build.log 2>&1; echo "$v build $?"; tail -1 /tmp/$v.build.log) &
done; wait; echo "builds ($(( $(date +%s) - t0 )) s)"
exe_of() { if [ $1 = tree ]; then echo ./build/fused3d; else echo /tmp/$1/build/fused3d; fi; }
for v in tree plainld; do echo "$v $(timeout 60 $(exe_of $v) --precision tf32 --check 2>&1 | grep -E 'check|rror' | tr '\n' ' ')"; done
for v in tree plainld; do
  timeout 120 ncu --clock-control none --set full -k regex:"epilogue" --launch-skip 6 --launch-count 1 $(exe_of $v) --precision tf32 --bench 5 >$out/ncu_full_$v.log 2>&1; echo "ncu $v exit $?"
done
for v in tree; do
  timeout 120 ncu --clock-control none --cache-control none -k regex:"epilogue" --launch-skip 6 --launch-count 3 --metrics gpu__time_duration.sum,sm__cycles_active.avg,smsp__cycles_active.avg $(exe_of $v) --precision tf32 --bench 5 >$out/ncu_nocache_$v.log 2>&1; echo "ncu nocache $v exit $?"
  grep -E "gpu__time|cycles_active" $out/ncu_nocache_$v.log
done
grep -E "Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Achieved Occupancy|Registers Per|Executed Ipc|One or More Eligible|Warp Cycles Per Issued|L2 Hit|Memory Throughput" $out/ncu_full_tree.log
for round in 1 2; do for v in tree plainld; do for prec in tf32 accurate; do
  echo "$round $v $prec $(timeout 60 $(exe_of $v) --precision $prec --bench 50 2>&1 | grep -E '^  (fused|speedup)' | head -2 | tr -s ' ' | tr '\n' ' ')"; done; done; done | tee $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
