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
build_dir=$(scripts/configure.sh)
jobs=$(nproc)
cmake --build "$build_dir" -j"$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" --timeout 900
