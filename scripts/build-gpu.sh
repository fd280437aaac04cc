#!/usr/bin/env bash
# Builds here everything bench/run_gpu.sh runs on a lent GPU machine, which has
# CUDA, PyTorch and CMake but no GoogleTest, Google Benchmark, MPI or Debian
# packages: sm_90 binaries with the CUDA runtime linked statically, the shared
# libraries they need and the Fashion-MNIST files, gathered in gpu-carry/
# (about 50 MB; name it in the device tool's `carry`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dataset-fashion-mnist
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
build=build-gpu
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DDGS_STATIC_CUDART=ON -DDGS_BUILD_TESTS=ON -DDGS_BUILD_BENCH=ON -DDGS_BUILD_EXAMPLES=ON \
  -DDGS_WITH_CUDNN=ON -DDGS_WITH_NCCL=ON -DDGS_WITH_MPI=OFF -DDGS_CUDA_EMULATION=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target dgs_tests dgs_bench_gpu train_fmnist
carry=gpu-carry
rm -rf "$carry"
mkdir -p "$carry/lib" "$carry/fmnist"
cp "$build/tests/dgs_tests" "$build/bench/dgs_bench_gpu" "$build/examples/train_fmnist/train_fmnist" "$carry/"
strip "$carry/dgs_tests" "$carry/dgs_bench_gpu" "$carry/train_fmnist"
cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$carry/lib/"
cp /usr/share/datasets/fashion-mnist/*.gz "$carry/fmnist/"
git rev-parse HEAD > "$carry/COMMIT"
git diff --quiet || echo "dirty" >> "$carry/COMMIT"
mkdir -p "$(git rev-parse --git-path info)"
grep -qx "/gpu-carry/" "$(git rev-parse --git-path info/exclude)" 2>/dev/null || echo "/gpu-carry/" >> "$(git rev-parse --git-path info/exclude)"
du -sh "$carry"
