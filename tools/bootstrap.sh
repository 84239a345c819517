#!/usr/bin/env bash
# Sets up everything fused3d needs on a fresh Debian machine with the CUDA toolkit, builds it,
# then runs the main job or the test suite.
#
#   bash tools/bootstrap.sh run [fused3d options]   # default options: --check
#   bash tools/bootstrap.sh test                    # the whole ctest suite
#
# What it installs when missing: Debian's libcli11-dev, googletest, cmake, ninja-build; a Python
# virtual environment with the pinned torch wheel from PyPI (libtorch comes from it), kept in
# $FUSED3D_VENV (default ~/.cache/fused3d/venv-torch-<version>) so later runs reuse it.
# FUSED3D_PYTHON=<python with torch> skips the venv (the GPU machine, which has torch and no network).
# FUSED3D_CUDA_ARCH sets CMAKE_CUDA_ARCHITECTURES (default 90a: H100/H200).
set -euo pipefail
TORCH_VERSION=2.11.0   # CUDA 13.0 build on PyPI: matches nvcc 13.x here and the GPU machine's torch
mode=${1:-run}
shift || true
case "$mode" in run|test) ;; *) echo "usage: $0 run|test [fused3d options]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."

# 1. system packages (CLI11 and GoogleTest may instead be staged in .deps/ by shared/device/stage-deps.sh)
missing=()
[ -f /usr/include/CLI/CLI.hpp ] || [ -f .deps/CLI11/include/CLI/CLI.hpp ] || missing+=(libcli11-dev)
[ -f /usr/src/googletest/CMakeLists.txt ] || [ -f .deps/googletest/CMakeLists.txt ] || missing+=(googletest)
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
if [ -z "${FUSED3D_PYTHON:-}" ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v nvcc >/dev/null; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH
  else echo "bootstrap: the CUDA toolkit (nvcc 13.x) is required and was not found" >&2; exit 1; fi
fi

# 2. Python with the pinned torch
if [ -n "${FUSED3D_PYTHON:-}" ]; then
  python=$FUSED3D_PYTHON
else
  venv=${FUSED3D_VENV:-$HOME/.cache/fused3d/venv-torch-$TORCH_VERSION}
  python=$venv/bin/python
  if ! "$python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "bootstrap: installing torch==$TORCH_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION"
  fi
fi

# 3. build
mkdir -p build && log=build/configure.log
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$python" \
  -DCMAKE_CUDA_ARCHITECTURES="${FUSED3D_CUDA_ARCH:-90a}" >"$log" 2>&1 || { cat "$log"; exit 1; }
cmake --build build

# 4. the job
if [ "$mode" = run ]; then
  [ $# -gt 0 ] || set -- --check
  exec ./build/fused3d "$@"
fi
exec ctest --test-dir build --output-on-failure -j "$(nproc)"
