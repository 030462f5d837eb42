#!/usr/bin/env bash
# Installs every Debian 12 package Sparrow needs to build, test and run.
# Idempotent and non-interactive; run as root (or through sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libonnx-dev python3-onnx libprotobuf-dev protobuf-compiler
  libopenblas-dev libeigen3-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev zlib1g-dev libzip-dev libpng-dev libjpeg-dev libyaml-cpp-dev
  python3-dev python3-numpy python3-torch libtorch-dev libgloo-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  libdnnl-dev ocl-icd-opencl-dev python3-torchvision
  pybind11-dev python3-pytest python3-pip python3-setuptools python3-wheel
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
