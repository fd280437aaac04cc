#!/usr/bin/env bash
# Runs the method comparison (bench/compare_methods.py) with the Debian
# python3 and matplotlib; installs what it needs and builds train_fmnist.
#   bench/compare_methods.sh [--epochs 5] [--workers 4 8 16 32] ...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh python3-matplotlib dataset-fashion-mnist
build_dir=$(scripts/configure.sh)
cmake --build "$build_dir" -j"$(nproc)" --target train_fmnist
exec /usr/bin/python3 bench/compare_methods.py --binary "$build_dir/examples/train_fmnist/train_fmnist" "$@"
