#!/usr/bin/env bash
# Run 117: the accurate mode on inputs with few distinct values. tools/precision_model.py predicts
# 1.2e-4 to 1.5e-4 against float64 for the kernel-4x4x4 kernels' accurate mode there (x - p rounded
# once to fp16: a value's rounding error is the same wherever it recurs, so the spatial mean does
# not average it out), and 4e-8 to 1.1e-7 for the implicit-GEMM kernels' split operands. On the
# standard layer at B = 8 (k4-mma) and B = 1024 (k4-planes), in both modes, the default kernel and
# FUSED3D_KERNEL=igemm-box (and igemm at B = 8): `fused3d --check` (against libtorch native with
# TF32 off; exit 1 over the mode's bound) on eight inputs, and `--bench 20` on two, which is what
# moving the standard layer's accurate mode onto split operands would cost.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
log="$out/summary.log"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$log"
start=$(date +%s)
( cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DBUILD_TESTING=OFF >/tmp/build.log 2>&1 && cmake --build build --target fused3d >>/tmp/build.log 2>&1
  echo "build exit $? after $(( $(date +%s) - start )) s" ) | tee -a "$log" &
mkdir -p /tmp/m
python3 tools/export_model.py --out /tmp/m/standard.pt >/tmp/export.log 2>&1
python3 - <<'PY' >>/tmp/export.log 2>&1
import torch
g = torch.Generator().manual_seed(7)
for batch in (8, 1024):
    shape = (batch, 3, 16, 32, 32)
    u = lambda: torch.rand(shape, generator=g)
    inputs = {
        "uniform": u(), "normal": torch.randn(shape, generator=g), "offset": u() + 5,
        "mask": (u() < 0.5).float() * 0.1, "two_values": torch.where(u() < 0.5, 0.1, 0.3).float(),
        "tenths": torch.randint(1, 10, shape, generator=g).float() / 10,
        "bytes": torch.randint(0, 256, shape, generator=g).float() / 255,
        "binary": (u() < 0.5).float(),  # exact in fp16: the control
    }
    for name, x in inputs.items():
        torch.save(x.contiguous(), f"/tmp/m/{name}_b{batch}.pt")
PY
echo "inputs written after $(( $(date +%s) - start )) s" | tee -a "$log"
wait
for batch in 8 1024; do
  for kernel in default igemm-box igemm; do
    [ $kernel = igemm ] && [ $batch = 1024 ] && continue
    for precision in accurate tf32; do
      for x in uniform normal offset mask two_values tenths bytes binary; do
        printf "B %-4s %-9s %-8s %-10s " $batch $kernel $precision $x
        env $([ $kernel = default ] || echo FUSED3D_KERNEL=$kernel) ./build/fused3d --model /tmp/m/standard.pt \
          --input /tmp/m/${x}_b$batch.pt --precision $precision --check 2>&1 |
          grep -E "^fused3d: kernel|relative L2|rror|cannot" | sed -E 's/fused3d: kernel +([a-z0-9-]+).*/\1/; s/.*relative L2 error ([^ ,]+).*/err \1/' |
          tr -s ' ' | tr '\n' ' ' | cut -c1-150
        echo "exit ${PIPESTATUS[0]}"
      done
    done
  done
done > "$out/check.log"
echo "checks done after $(( $(date +%s) - start )) s" | tee -a "$log"
for kernel in default igemm-box; do
  for precision in accurate tf32; do
    for x in uniform mask; do
      printf "B 1024 %-9s %-8s %-8s " $kernel $precision $x
      env $([ $kernel = default ] || echo FUSED3D_KERNEL=$kernel) ./build/fused3d --model /tmp/m/standard.pt \
        --input /tmp/m/${x}_b1024.pt --precision $precision --bench 20 2>&1 | grep -E "^  fused " | tr -s ' ' | cut -c1-90
    done
  done
done > "$out/bench.log"
echo "bench done after $(( $(date +%s) - start )) s" | tee -a "$log"
cat "$out/check.log" "$out/bench.log" | tee -a "$log" >/dev/null
