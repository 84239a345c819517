#!/usr/bin/env bash
# Run 105: which box-kernel layers meet run 104's illegal instruction: the executable on exported
# layers one at a time (padding or not, 16 or 64 channels, one chunk or several, both modes), then
# the failing tests under compute-sanitizer.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
start=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
  >"$out/build.log" 2>&1 && cmake --build build --target fused3d fused3d_tests >>"$out/build.log" 2>&1; echo "build exit $? after $(( $(date +%s) - start )) s"
mkdir -p /tmp/m; e="python3 tools/export_model.py"
layers=(
  "c3k3 --in-channels 3 --out-channels 16 --kernel-size 3 --batch 64"
  "c3k3p1 --in-channels 3 --out-channels 16 --kernel-size 3 --padding 1 --batch 4"
  "c3k3p1b64 --in-channels 3 --out-channels 16 --kernel-size 3 --padding 1 --batch 64"
  "c8k3n64 --in-channels 8 --out-channels 64 --kernel-size 3 --groups 8 --batch 16"
  "c16k3n64 --in-channels 16 --out-channels 64 --kernel-size 3 --groups 8 --batch 16"
  "c16k3n32 --in-channels 16 --out-channels 32 --kernel-size 3 --groups 8 --batch 16"
  "c4k3n16c2 --in-channels 12 --out-channels 16 --kernel-size 3 --batch 16"
)
for l in "${layers[@]}"; do set -- $l; n=$1; shift; $e --out /tmp/m/$n.pt "$@" --input-out /tmp/m/${n}_x.pt >/dev/null 2>&1 || echo "export $n failed"; done
for l in "${layers[@]}"; do set -- $l; n=$1
  for p in tf32 accurate; do
    printf "%-10s %-8s " $n $p
    timeout 30 ./build/fused3d --model /tmp/m/$n.pt --input /tmp/m/${n}_x.pt --precision $p --check 2>&1 | grep -E "kernel|relative L2|error" | sed -E 's/ \(tensor cores.*//' | cut -c1-100 | tr '\n' ' '
    echo
  done
done | tee "$out/layers.txt"
echo "layers done after $(( $(date +%s) - start )) s"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fused3d_tests \
  --gtest_filter=FusedCuda.ImplicitGemmLayersInBothModes >"$out/sanitize_igemm.log" 2>&1; echo "sanitizer exit $?"
grep -E "=========" "$out/sanitize_igemm.log" | head -30
echo "done after $(( $(date +%s) - start )) s"
