#!/usr/bin/env bash
# On the GPU machine, after tools/device_bench.sh (or bootstrap.sh test) built ./build: every GPU
# test under compute-sanitizer memcheck (all kernels, ours and libtorch's; 2 minutes) and racecheck
# (our two shared-memory kernels, whose names end in _moments_kernel). racecheck leaves out
# InputOverTwoToThe31Elements: its 43,691 samples run the same kernels as the other tests and did
# not finish in 280 s under racecheck (memcheck: 10 s). The sweep's seed is fixed so the run can be
# repeated. Logs go to $OUT or ./device-logs.
#   bash tools/device_sanitize.sh [memcheck|racecheck ...]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-logs}
mkdir -p "$out"
tests=./build/tests/fused3d_tests
for tool in "${@:-memcheck racecheck}"; do
  for t in $tool; do
    extra=()
    filter='FusedCuda.*'
    if [ "$t" = racecheck ]; then
      extra=(--kernel-name kns=_moments_kernel)
      filter='FusedCuda.*:-FusedCuda.InputOverTwoToThe31Elements'
    fi
    FUSED3D_SWEEP_SEED=${FUSED3D_SWEEP_SEED:-20261125} timeout "${SANITIZE_TIMEOUT:-280}" \
      compute-sanitizer --tool "$t" "${extra[@]}" --error-exitcode 9 "$tests" --gtest_filter="$filter" \
      >"$out/sanitize_$t.log" 2>&1
    echo "$t: exit $?"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED|tests ran" "$out/sanitize_$t.log" | tail -4
  done
done
