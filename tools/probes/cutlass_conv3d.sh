#!/usr/bin/env bash
# Times the 3-D convolution alone through CUTLASS 3.x's Hopper (sm_90a) implicit-GEMM conv fprop
# (TMA im2col + warp-specialized GMMA, TF32 operands, float accumulation, plain D = acc store) on
# the probe's layers, checking sampled outputs against a double-precision direct convolution.
# It is the lower bound for a CUTLASS-based conv before any fused epilogue, to set beside the
# project's fused kernel on the same layers. See tools/probes/cutlass_conv3d.cu for what is timed.
#
#   bash tools/probes/cutlass_conv3d.sh            build, then run every layer (GPU machine)
#   bash tools/probes/cutlass_conv3d.sh run ace    build, then run layers a, c and e only
#   bash tools/probes/cutlass_conv3d.sh build      build only (works without a GPU)
#   bash tools/probes/cutlass_conv3d.sh info       build, then print each tile config's threads,
#                                                  shared memory and can_implement per layer (no GPU)
#   bash tools/probes/cutlass_conv3d.sh exec [ae]  run the binary already built (e.g. built on a
#                                                  machine without a GPU and carried over), no headers
#   bash tools/probes/cutlass_conv3d.sh fetch      put the CUTLASS headers in .deps/cutlass (needs PyPI)
#
# Headers: .deps/cutlass/include (cute/ and cutlass/, about 27 MB) and .deps/cutlass/util/include
# (cutlass/util/, 1 MB: the conv mainloop includes cutlass/util/packed_stride.hpp), taken from the
# nvidia-cutlass wheel on PyPI, which ships CUTLASS's include trees under
# cutlass_library/source/include and cutlass_library/source/tools/util/include. The GPU
# machine has no network, so fetch on a machine that has it and carry .deps/cutlass along.
# The binary goes to build/probes/cutlass_conv3d (override with CUTLASS_CONV3D_BIN).
set -euo pipefail
cd "$(dirname "$0")/../.."

cutlass_version=4.2.0.0
inc=.deps/cutlass/include
util_inc=.deps/cutlass/util/include
bin=${CUTLASS_CONV3D_BIN:-build/probes/cutlass_conv3d}
action=${1:-run}

if [[ $action == fetch ]]; then
  tmp=$(mktemp -d)
  python3 -m pip download "nvidia-cutlass==$cutlass_version" --no-deps -d "$tmp" >/dev/null
  (cd "$tmp" && python3 -m zipfile -e nvidia_cutlass-*.whl x)
  rm -rf .deps/cutlass
  mkdir -p .deps/cutlass
  cp -r "$tmp/x/cutlass_library/source/include" .deps/cutlass/
  mkdir -p .deps/cutlass/util
  cp -r "$tmp/x/cutlass_library/source/tools/util/include" .deps/cutlass/util/
  echo "nvidia-cutlass $cutlass_version (PyPI wheel), include/ from cutlass_library/source/include, util/include/ from cutlass_library/source/tools/util/include" >.deps/cutlass/VERSION
  rm -rf "$tmp"
  du -sh .deps/cutlass
  exit 0
fi

if [[ $action == exec ]]; then
  shift
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null || true
  exec "$bin" "$@"
fi

if [[ ! -f $inc/cutlass/conv/collective/builders/sm90_gmma_builder.inl || ! -f $util_inc/cutlass/util/packed_stride.hpp ]]; then
  echo "CUTLASS headers missing under .deps/cutlass: run 'bash tools/probes/cutlass_conv3d.sh fetch' where PyPI is reachable" >&2
  exit 1
fi

mkdir -p "$(dirname "$bin")"
# CUTLASS_ENABLE_TENSOR_CORE_MMA: let CUTLASS use tensor-core MMA paths. --expt-relaxed-constexpr:
# CuTe calls constexpr host functions from device code. No -lcuda: CUTLASS reaches the driver's
# cuTensorMapEncode* through cudaGetDriverEntryPoint.
start=$(date +%s)
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
  -DCUTLASS_ENABLE_TENSOR_CORE_MMA=1 -DNDEBUG \
  -I"$inc" -I"$util_inc" -Itools/probes \
  tools/probes/cutlass_conv3d.cu -o "$bin"
echo "built $bin in $(($(date +%s) - start)) s"

if [[ $action == build ]]; then exit 0; fi
if [[ $action == info ]]; then exec "$bin" --info; fi
[[ $action == run ]] || { echo "unknown action '$action' (run, build, info, exec, fetch)" >&2; exit 2; }
shift || true
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null || true
"$bin" "$@"
