#!/usr/bin/env bash
# Run 101, second call (same machine, build kept): tools/bench_layers.py with torch.compile
# max-autotune-no-cudagraphs on the layers where it can be PyTorch's best, appended to the first
# call's CSV, then tools/bench_files.py (32 files of B = 1024, 4 of them also one command each).
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
start=$(date +%s)
cp docs/records/2026-12-03-run101-final/layers.csv "$out/layers.csv"
PYTHONUNBUFFERED=1 timeout 330 python3 tools/bench_layers.py --layers cin32_k3_8x32,cin16_k3_pad1_64,k7,depthwise,k3 \
  --runs 20 --append --out "$out/layers" >"$out/layers_compile.log" 2>&1; echo "bench_layers exit $? after $(( $(date +%s) - start )) s"
grep -E "Geometric" "$out/layers_compile.log"
PYTHONUNBUFFERED=1 timeout $(( 585 - ($(date +%s) - start) )) python3 tools/bench_files.py --exe build/fused3d --files 32 \
  --per-file 4 --csv "$out/files.csv" >"$out/files.log" 2>&1; echo "bench_files exit $? after $(( $(date +%s) - start )) s"
tail -14 "$out/files.log"
