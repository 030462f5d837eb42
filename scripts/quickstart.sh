#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install, build, get a model, compress it, run it,
# show the report.
#
# Trains LeNet-5 with PyTorch on MNIST (../shared/data/mnist, or the directory given as $1) and
# exports it to ONNX; without MNIST it first writes a small synthetic digit set. Then Sparrow
# imports the ONNX file and shows its layers, compresses it (post-training: pruning, 8/5-bit weight
# sharing, relative-index encoding, Huffman), shows where every byte of the .spw file goes, and
# evaluates both files next to PyTorch's own accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh

data="${1:-../shared/data/mnist}"
out=out/quickstart
mkdir -p "$out"
if [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
  echo "MNIST not found at $data: using synthetic digits instead"
  data="$out/synthetic"
  /usr/bin/python3 examples/pytorch/synthetic_digits.py "$data"
fi
export OPENBLAS_NUM_THREADS=1
/usr/bin/python3 -W ignore examples/pytorch/train_classifier.py --data "$data" --arch lenet5 --epochs 1 \
  -o "$out/lenet5.onnx"

sparrow=build/src/sparrow
echo; echo "== sparrow info $out/lenet5.onnx"
$sparrow info "$out/lenet5.onnx"
images="$data/t10k-images-idx3-ubyte.gz"
labels="$data/t10k-labels-idx1-ubyte.gz"
echo; echo "== sparrow eval $out/lenet5.onnx"
$sparrow eval "$out/lenet5.onnx" --images "$images" --labels "$labels"
echo; echo "== sparrow compress $out/lenet5.onnx -o $out/lenet5.spw --sparsity 0.7 --layer conv1.weight:sparsity=0.3"
$sparrow compress "$out/lenet5.onnx" -o "$out/lenet5.spw" --sparsity 0.7 --layer conv1.weight:sparsity=0.3
echo; echo "== sparrow eval $out/lenet5.spw"
$sparrow eval "$out/lenet5.spw" --images "$images" --labels "$labels"
