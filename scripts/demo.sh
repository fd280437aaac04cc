#!/usr/bin/env bash
# The dgs demo: installs what it needs (Debian packages, Fashion-MNIST), builds
# the training program and trains for a few epochs, printing test accuracy
# and the communication saved against dense pushes and pulls.
#
#   scripts/demo.sh                          # 4 async workers, samomentum, 1%, 3 epochs
#   scripts/demo.sh --method gd --workers 8  # any train_fmnist option
#
# With a GPU (and cuDNN) it trains a small CNN on the cuda backend; without
# one, a perceptron on the host backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh dataset-fashion-mnist  # the data set: /usr/share/datasets/fashion-mnist
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
build_dir=$(scripts/configure.sh)
cmake --build "$build_dir" -j"$(nproc)" --target train_fmnist
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(--epochs 3)
exec "$build_dir/examples/train_fmnist/train_fmnist" --json "$build_dir/fmnist_results.json" "${args[@]}"
