#!/usr/bin/env bash
# Runs the method comparison (bench/compare_methods.py) with the Debian
# python3 and matplotlib; installs what it needs and builds train_fmnist.
#   bench/compare_methods.sh [--epochs 5] [--workers 4 8 16 32] ...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
missing=()
for p in python3-matplotlib dataset-fashion-mnist; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
build_dir=$(scripts/configure.sh)
cmake --build "$build_dir" -j"$(nproc)" --target train_fmnist
exec /usr/bin/python3 bench/compare_methods.py --binary "$build_dir/examples/train_fmnist/train_fmnist" "$@"
