#!/usr/bin/env bash
# The GPU tests on the CPU emulation of the kernels, built with AddressSanitizer
# and UBSan: every kernel access outside its allocation or outside a __shared__
# array, every misaligned vector load, bad shift or signed overflow fails the
# test (docs/emulation.md). A memcheck where there is no GPU; it does not
# replace compute-sanitizer on one (races between blocks, the real hardware).
#
#   scripts/emulated-memcheck.sh        # build in ./build-emu-asan; every test but the
#                                       # every-method one (over half an hour here), in all
#                                       # three orders (forward, reverse, interleaved)
#   EXCLUDE= scripts/emulated-memcheck.sh            # all of them
#   BUILD_DIR=b TESTS=emulated\\. scripts/emulated-memcheck.sh   # one order
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
build_dir=${BUILD_DIR:-build-emu-asan}
# Only the emulated tests are built (g++, no nvcc); CMake still needs the CUDA
# toolkit to configure the project.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DDGS_BUILD_TESTS=ON -DDGS_BUILD_EXAMPLES=OFF -DDGS_BUILD_BENCH=OFF -DDGS_WITH_MPI=OFF \
  -DDGS_CUDA_EMULATION=ON -DDGS_CUDA_EMULATION_ASAN=ON >/dev/null
cmake --build "$build_dir" --target dgs_emulated_tests -j"$(nproc)"
exclude=${EXCLUDE-EveryMethodAndCompressor}
ctest --test-dir "$build_dir" \
  -R "^(${TESTS:-emulated\\.|emulated_reverse\\.|emulated_interleaved\\.})" \
  ${exclude:+-E "$exclude"} --output-on-failure -j"$(nproc)"
