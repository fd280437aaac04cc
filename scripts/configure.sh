#!/usr/bin/env bash
# Configures the build directory the same way for scripts/test.sh and
# scripts/demo.sh, so they share one build: MPI on, cuDNN when the toolkit has
# it, and kernels for this machine's GPU ("native") when it has one, sm_90
# without one, unless CUDA_ARCHS says otherwise ("80;90", ...).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
build_dir=${BUILD_DIR:-build}
cudnn=OFF
nccl=OFF
for dir in /usr/local/cuda/include /usr/include /usr/include/x86_64-linux-gnu ${CUDNN_ROOT:+$CUDNN_ROOT/include} \
           ${NCCL_ROOT:+$NCCL_ROOT/include}; do
  [[ -f $dir/cudnn.h ]] && cudnn=ON
  [[ -f $dir/nccl.h ]] && nccl=ON
done
archs=90
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then archs=native; fi
echo "dgs: configuring $build_dir (CUDA architectures ${CUDA_ARCHS:-$archs}, cuDNN $cudnn, NCCL $nccl)" >&2
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-$archs}" \
  -DDGS_BUILD_TESTS=ON -DDGS_BUILD_EXAMPLES=ON -DDGS_BUILD_BENCH=ON -DDGS_WITH_MPI=ON -DDGS_WITH_CUDNN="$cudnn" \
  -DDGS_WITH_NCCL="$nccl" >/dev/null
echo "$build_dir"
