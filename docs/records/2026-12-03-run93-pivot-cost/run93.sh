#!/usr/bin/env bash
# Run 93: where run 92's tree lost time against 04e43ac. Builds in the same call: base (04e43ac),
# split (28d93a8: the kernels split into their files and the mbarrier rings, no pivots), tree (the
# pivots), nofadd (tree without the producers' pivot subtraction; offset inputs then wrong); times
# each at B = 1024 in both modes, three rounds in alternation, and ncu's kernel durations of one
# forward for split and tree.
set -uo pipefail
out=${OUT:-device-logs}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
start=$(date +%s)
for v in base v1 v3; do
  mkdir -p exp/$v/.deps && ln -sfn "$PWD/.deps/CLI11" exp/$v/.deps/CLI11 && ln -sfn "$PWD/.deps/googletest" exp/$v/.deps/googletest
  ( cmake -S exp/$v -B /tmp/$v -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 \
      -DCMAKE_CUDA_ARCHITECTURES=90a -DBUILD_TESTING=OFF >"$out/build_$v.log" 2>&1 &&
    cmake --build /tmp/$v --target fused3d >>"$out/build_$v.log" 2>&1; echo "$v build exit $?" ) &
done
( cmake -S . -B /tmp/tree -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=python3 -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DBUILD_TESTING=OFF >"$out/build_tree.log" 2>&1 && cmake --build /tmp/tree --target fused3d >>"$out/build_tree.log" 2>&1
  echo "tree build exit $?" ) &
wait; echo "builds done after $(( $(date +%s) - start )) s"
for round in 1 2 3; do
  for v in base v1 tree v3; do
    for p in accurate tf32; do
      printf "round %s %-4s %-8s " $round $v $p
      /tmp/$v/fused3d --precision $p --check --bench 50 2>&1 | grep -E "^  fused |relative L2" |
        sed -E 's/.*relative L2 error ([^ ]+).*/err \1/' | tr -s ' ' | tr '\n' ' '
      echo
    done
  done
done | tee "$out/ab.log"
for v in v1 tree; do
  for p in tf32 accurate; do
    ncu --clock-control none --metrics gpu__time_duration.sum /tmp/$v/fused3d --precision $p >"$out/ncu_${v}_$p.log" 2>&1
    echo "ncu $v $p:"; grep -E "^  [a-z_].*\(|gpu__time_duration" "$out/ncu_${v}_$p.log" | sed -E 's/\(.*//' | paste - - | tr -s ' ' | tail -4
  done
done
echo "done after $(( $(date +%s) - start )) s"
