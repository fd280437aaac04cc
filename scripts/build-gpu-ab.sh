#!/usr/bin/env bash
# Builds the GPU tests and benchmarks of several commits side by side, so
# device calls on a lent GPU machine can check each against the host
# reference and time them in the same session (a kernel change is merged
# only when it is bit-exact there and faster):
#
#   scripts/build-gpu-ab.sh main wip/fused-candidates main+update-3-blocks
#       -> gpu-ab/main/, gpu-ab/wip-fused-candidates/, gpu-ab/main+update-3-blocks/
#          (about 8 MB each), all packed in gpu-ab.tar.xz (about 0.6 MB per
#          build: the builds share most of their bytes)
#
# REF+NAME builds REF with bench/patches/NAME.patch applied: a variant that
# lives as a patch survives where a branch may not (a fresh checkout has
# main only).
#
# and then, with `gpu-ab.tar.xz` in the device tool's carry, one device call
# per part (bench/run_ab.sh; see bench/README.md):
#
#   bench/run_ab.sh tests [NAME...]
#   bench/run_ab.sh bench [NAME...]
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
for spec in "$@"; do
  ref=${spec%%+*}
  git rev-parse --verify --quiet "$ref^{commit}" >/dev/null ||
    { echo "build-gpu-ab: '$ref' is not a commit here" >&2; exit 2; }
  if [[ $spec == *+* && ! -f bench/patches/${spec#*+}.patch ]]; then
    echo "build-gpu-ab: no bench/patches/${spec#*+}.patch" >&2
    exit 2
  fi
done
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
root=$PWD
tree=build-ab/tree
if [[ ! -e $tree/.git ]]; then
  mkdir -p build-ab
  git worktree add --detach "$tree" HEAD >/dev/null
fi
mkdir -p "$(git rev-parse --git-path info)"
for ignored in /gpu-ab/ /gpu-ab.tar.xz; do
  grep -qx "$ignored" "$(git rev-parse --git-path info/exclude)" 2>/dev/null ||
    echo "$ignored" >> "$(git rev-parse --git-path info/exclude)"
done
for spec in "$@"; do
  ref=${spec%%+*}
  name=$(echo "$spec" | tr '/ ' '--')
  commit=$(git rev-parse "$ref^{commit}")
  echo "== $spec ($commit)"
  git -C "$tree" reset --quiet --hard
  git -C "$tree" checkout --quiet --detach "$commit"
  if [[ $spec == *+* ]]; then
    git -C "$tree" apply "$root/bench/patches/${spec#*+}.patch" ||
      { echo "build-gpu-ab: bench/patches/${spec#*+}.patch does not apply to $ref" >&2; exit 1; }
  fi
  cmake -S "$tree" -B build-ab/build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DDGS_STATIC_CUDART=ON -DDGS_BUILD_TESTS=ON -DDGS_BUILD_BENCH=ON -DDGS_BUILD_EXAMPLES=OFF \
    -DDGS_WITH_CUDNN=OFF -DDGS_WITH_NCCL=ON -DDGS_WITH_MPI=OFF -DDGS_CUDA_EMULATION=OFF >/dev/null
  cmake --build build-ab/build -j"$(nproc)" --target dgs_tests dgs_bench_gpu
  out=gpu-ab/$name
  rm -rf "$out"
  mkdir -p "$out/lib"
  cp build-ab/build/tests/dgs_tests build-ab/build/bench/dgs_bench_gpu "$out/"
  strip "$out/dgs_tests" "$out/dgs_bench_gpu"
  cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$out/lib/"
  echo "$commit $spec" > "$out/COMMIT"
  # The order bench/run_ab.sh runs them in: the latest build last.
  { grep -vx "$name" gpu-ab/ORDER 2>/dev/null || true; echo "$name"; } > gpu-ab/ORDER.new
  mv gpu-ab/ORDER.new gpu-ab/ORDER
done
cd "$root"
du -sh gpu-ab/*
# Every build in gpu-ab/ (earlier runs' too), in one archive: a 64 MiB
# dictionary finds what the builds share, so dozens fit the device tool's
# 64 MiB carry where seven unpacked ones would not.
tar -C gpu-ab -cf - . | xz -9e --lzma2=dict=64MiB > gpu-ab.tar.xz
echo "gpu-ab.tar.xz: $(du -h gpu-ab.tar.xz | cut -f1) for $(ls -d gpu-ab/*/ | wc -l) builds"
