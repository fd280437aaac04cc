#!/usr/bin/env bash
# Installs the Debian packages dgs builds and tests with, when they are missing,
# and any further packages named on the command line:
#   scripts/install-deps.sh [dataset-fashion-mnist ...]
# Needs root (or sudo) only if something has to be installed. The CUDA toolkit
# itself (nvcc, NCCL, cuDNN) is expected in /usr/local/cuda or on PATH.
set -euo pipefail

packages=(cmake g++ make python3 libgtest-dev libbenchmark-dev openmpi-bin libopenmpi-dev zlib1g-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "dgs: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "dgs: need root to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  # Through env: sudo would drop an exported DEBIAN_FRONTEND.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# CMakeLists.txt needs CMake 3.25 (Debian 12, Ubuntu 24.04); an older release's
# cmake can be replaced from PyPI.
cmake_version=$(cmake --version | head -1 | awk '{print $3}')
if [[ $(printf '%s\n3.25\n' "$cmake_version" | sort -V | head -1) != 3.25 ]]; then
  echo "dgs: cmake $cmake_version is older than the 3.25 dgs needs; install a newer one," >&2
  echo "dgs: for example: python3 -m pip install --upgrade cmake (then put it first on PATH)" >&2
  exit 1
fi

if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "dgs: no CUDA toolkit found (nvcc is neither on PATH nor in /usr/local/cuda/bin)." >&2
  echo "dgs: install CUDA 12 or 13 and put its bin directory on PATH." >&2
  exit 1
fi
