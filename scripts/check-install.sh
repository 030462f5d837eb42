#!/usr/bin/env bash
# Installs a build into a scratch prefix and builds the example consumer against it twice: with
# find_package(Sparrow) (examples/runtime) and with pkg-config. Each program then runs a .spw that the
# installed CLI compressed from MODEL.onnx.
# With PYTHON (the build has the Python package), the installed package must import and run it too.
# usage: scripts/check-install.sh BUILD_DIR WORK_DIR MODEL.onnx [PYTHON]
set -euo pipefail
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 BUILD_DIR WORK_DIR MODEL.onnx [PYTHON]" >&2
  exit 2
fi
build=$(realpath "$1")
work=$2
model=$3
python=${4:-}
source_dir=$(realpath "$(dirname "$0")/..")
rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
"$prefix/bin/sparrow" --quiet compress "$model" -o "$work/model.spw" --sparsity 0.8 --bits 4

cmake -S "$source_dir/examples/runtime" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/cmake-build" > "$work/build.log"
"$work/cmake-build/run_spw" "$work/model.spw" | tee "$work/cmake-run.txt"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046  # pkg-config's flags are meant to split into words
g++ -std=c++20 -O2 "$source_dir/examples/runtime/run_spw.cpp" -o "$work/run_spw_pc" $(pkg-config --cflags --libs sparrow)
"$work/run_spw_pc" "$work/model.spw" | tee "$work/pkg-config-run.txt"

version=$(pkg-config --modversion sparrow)
grep -q "^built against sparrow $version\$" "$work/cmake-run.txt"
cmp "$work/cmake-run.txt" "$work/pkg-config-run.txt"
grep -q "^output \[" "$work/cmake-run.txt"
if [ -n "$python" ]; then
  module=$(find "$prefix" -name '_sparrow*.so' -path '*/sparrow/*' | head -n 1)
  if [ -z "$module" ]; then
    echo "check-install: no Python package sparrow under $prefix" >&2
    exit 1
  fi
  site=$(dirname "$(dirname "$module")")
  (cd "$work" && PYTHONPATH="$site" "$python" -c "
import sparrow
assert sparrow.__file__.startswith('$site'), sparrow.__file__
model = sparrow.load('$work/model.spw')
print('python: output', list(model.run(sparrow.empty([1] + model.inputs[0]['shape'][1:])).shape))
" | tee "$work/python-run.txt")
  grep -q "^python: output \[1, " "$work/python-run.txt"
fi
echo "check-install: find_package(Sparrow) and pkg-config consumers both ran $work/model.spw"
