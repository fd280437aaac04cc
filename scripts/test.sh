#!/usr/bin/env bash
# Builds dgs and runs its whole test suite (ctest). Installs missing Debian
# packages first. GPU tests skip themselves where no GPU is present.
#
#   scripts/test.sh                 # build in ./build for sm_90, run every test
#   BUILD_DIR=b CUDA_ARCHS="80;90" scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"

build_dir=${BUILD_DIR:-build}
jobs=$(nproc)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" -DDGS_BUILD_TESTS=ON -DDGS_WITH_MPI=ON
cmake --build "$build_dir" -j"$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" --timeout 900
