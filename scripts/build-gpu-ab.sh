#!/usr/bin/env bash
# Builds the GPU tests and benchmarks of several commits side by side, so
# device calls on a lent GPU machine can check each against the host
# reference and time them in the same session (a kernel change is merged
# only when it is bit-exact there and faster):
#
#   scripts/build-gpu-ab.sh main wip/fused-candidates
#       -> gpu-ab/main/, gpu-ab/wip-fused-candidates/ (about 8 MB each)
#
# and then, with `gpu-ab` in the device tool's carry, one call per part (see
# bench/README.md):
#
#   for d in gpu-ab/*/; do CARRY=$d OUT=$OUT/$(basename $d) SANITIZE=0 \
#     TEST_FILTER='CudaBackendTest.*' bench/run_gpu.sh tests; done
#   for d in gpu-ab/*/; do CARRY=$d OUT=$OUT/$(basename $d) REPS=5 \
#     BENCH_FILTER='(worker_step/samomentum|server_push|update_pass)/resnet50/P=100000000/' \
#     bench/run_gpu.sh bench; done
#
# The commits are checked out in a separate worktree (build-ab/tree) and
# built in one reused build directory (build-ab/build), so the working tree is
# left alone and a second commit recompiles only what differs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -eq 0 ]]; then
  echo "usage: scripts/build-gpu-ab.sh REF [REF...]   (commits, branches or tags)" >&2
  exit 2
fi
for ref in "$@"; do
  git rev-parse --verify --quiet "$ref^{commit}" >/dev/null ||
    { echo "build-gpu-ab: '$ref' is not a commit here" >&2; exit 2; }
done
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
root=$PWD
tree=build-ab/tree
if [[ ! -e $tree/.git ]]; then
  mkdir -p build-ab
  git worktree add --detach "$tree" HEAD >/dev/null
fi
mkdir -p "$(git rev-parse --git-path info)"
grep -qx "/gpu-ab/" "$(git rev-parse --git-path info/exclude)" 2>/dev/null ||
  echo "/gpu-ab/" >> "$(git rev-parse --git-path info/exclude)"
for ref in "$@"; do
  name=$(echo "$ref" | tr '/ ' '--')
  commit=$(git rev-parse "$ref^{commit}")
  echo "== $ref ($commit)"
  git -C "$tree" checkout --quiet --detach "$commit"
  cmake -S "$tree" -B build-ab/build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DDGS_STATIC_CUDART=ON -DDGS_BUILD_TESTS=ON -DDGS_BUILD_BENCH=ON -DDGS_BUILD_EXAMPLES=OFF \
    -DDGS_WITH_CUDNN=OFF -DDGS_WITH_NCCL=ON -DDGS_WITH_MPI=OFF >/dev/null
  cmake --build build-ab/build -j"$(nproc)" --target dgs_tests dgs_bench_gpu
  out=gpu-ab/$name
  rm -rf "$out"
  mkdir -p "$out/lib"
  cp build-ab/build/tests/dgs_tests build-ab/build/bench/dgs_bench_gpu "$out/"
  strip "$out/dgs_tests" "$out/dgs_bench_gpu"
  cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$out/lib/"
  echo "$commit $ref" > "$out/COMMIT"
done
cd "$root"
du -sh gpu-ab/*
