#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install, build, then Deep Compression end to end.
#
# `sparrow repro lenet300` trains LeNet-300-100 with LibTorch, prunes it iteratively with masked
# retraining, shares its weights (k-means, then trained quantization of the codebooks), encodes it as
# relative-index CSC with Huffman coding, and writes one .spw file. The file is then inspected (every
# byte accounted for), evaluated on the sparse engine, benchmarked against the same weights on the
# dense executor, and drawn as plots by `sparrow report`.
#
# Data: MNIST from ../shared/data/mnist or the directory given as $1; without MNIST, Sparrow writes
# a small synthetic digit set (`sparrow digits`) and runs the same pipeline on it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh

sparrow=build/src/sparrow
data="${1:-../shared/data/mnist}"
out=out/quickstart
mkdir -p "$out"
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
  echo "MNIST not found at $data: writing synthetic digits instead"
  data="$out/digits"
  $sparrow digits "$data"
fi
images="$data/t10k-images-idx3-ubyte.gz"
labels="$data/t10k-labels-idx1-ubyte.gz"
run() { echo; echo "== sparrow $*"; $sparrow "$@"; }

run repro lenet300 --data "$data" -o "$out/lenet300.spw" --baseline "$out/lenet300.onnx"
run inspect "$out/lenet300.spw"
run eval "$out/lenet300.spw" --images "$images" --labels "$labels"
run bench "$out/lenet300.spw" --batch 1,64
run report "$out/lenet300.spw" -o "$out/report" --source "$out/lenet300.onnx"
