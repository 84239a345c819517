#!/usr/bin/env bash
# ad-hoc (not kept): the two groups take their items' statistics in turn (FUSED3D_ALTERNATE=1)
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p $out
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader | tee $out/gpu.txt
t0=$(date +%s)
FUSED3D_ALTERNATE=1 FUSED3D_PYTHON=python3 bash tools/bootstrap.sh test > $out/ctest.log 2>&1; echo "ctest (alternating) exit $? ($(( $(date +%s) - t0 )) s)"
tail -3 $out/ctest.log; grep -E "\(Failed\)|\*\*\*Failed|Skipped" $out/ctest.log | head
for a in 0 1; do for prec in tf32 accurate; do FUSED3D_ALTERNATE=$a ./build/fused3d --precision $prec --check --bench 5 2>&1 | grep -E "^check"; done; done
for a in 0 1; do echo "== trace alternate $a"; FUSED3D_TRACE=1 FUSED3D_ALTERNATE=$a ./build/fused3d --precision tf32 --bench 30 2>&1 | grep trace; done | tee $out/trace.log | awk 'NR%6==1 || /==/'
for round in 1 2 3; do for a in 0 1; do for prec in tf32 accurate; do
  echo "$round alternate $a $prec $(FUSED3D_ALTERNATE=$a ./build/fused3d --precision $prec --bench 50 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done; done | tee $out/ab.log
for b in 1 4096; do for a in 0 1; do echo "B=$b alternate $a tf32 $(FUSED3D_ALTERNATE=$a ./build/fused3d --batch $b --precision tf32 --bench 30 2>&1 | grep -E '^  fused' | head -1 | tr -s ' ')"; done; done | tee -a $out/ab.log
echo "total $(( $(date +%s) - t0 )) s"
