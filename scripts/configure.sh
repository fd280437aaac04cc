#!/usr/bin/env bash
# Configures the build directory the same way for scripts/test.sh and
# scripts/demo.sh, so they share one build: MPI on, cuDNN when the toolkit has
# it, and kernels for this machine's GPU ("native") when it has one, sm_90
# without one, unless CUDA_ARCHS says otherwise ("80;90", ...).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
build_dir=${BUILD_DIR:-build}
# A library counts when both its header and its shared library are there
# (a header alone made find_package fail).
cudnn=OFF
nccl=OFF
header() {
  for dir in /usr/local/cuda/include /usr/include /usr/include/x86_64-linux-gnu \
             ${CUDNN_ROOT:+$CUDNN_ROOT/include} ${NCCL_ROOT:+$NCCL_ROOT/include}; do
    [[ -f $dir/$1 ]] && return 0
  done
  return 1
}
library() {
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu /usr/lib \
             ${CUDNN_ROOT:+$CUDNN_ROOT/lib $CUDNN_ROOT/lib64} ${NCCL_ROOT:+$NCCL_ROOT/lib $NCCL_ROOT/lib64}; do
    compgen -G "$dir/$1.so*" >/dev/null && return 0
  done
  return 1
}
header cudnn.h && library libcudnn && cudnn=ON
header nccl.h && library libnccl && nccl=ON
archs=90
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then archs=native; fi
echo "dgs: configuring $build_dir (CUDA architectures ${CUDA_ARCHS:-$archs}, cuDNN $cudnn, NCCL $nccl)" >&2
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-$archs}" \
  -DDGS_BUILD_TESTS=ON -DDGS_BUILD_EXAMPLES=ON -DDGS_BUILD_BENCH=ON -DDGS_WITH_MPI=ON -DDGS_WITH_CUDNN="$cudnn" \
  -DDGS_WITH_NCCL="$nccl" >/dev/null
echo "$build_dir"
