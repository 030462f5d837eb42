#!/usr/bin/env bash
# Fuzzes one reader: scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]
# TARGET: onnx, spw, npy, idx, recipe or sim_config. Builds the fuzz targets with clang, ASan and
# UBSan in build-fuzz/ (runtime only: no training, no benchmarks), writes the seed corpora, and
# fuzzes TARGET for SECONDS, keeping what it finds in build-fuzz/corpus/TARGET (crashes are written
# to the current folder as crash-*, with the input that caused them). All targets in turn, 60 s each:
# ctest --test-dir build-fuzz -L fuzz
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET SECONDS [libFuzzer options...]" >&2
  exit 1
fi
target=$1 seconds=$2
shift 2
cd "$(dirname "$0")/.."
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARROW_BUILD_FUZZERS=ON \
  -DSPARROW_WITH_TRAINING=OFF -DSPARROW_WITH_PYTHON=OFF -DSPARROW_WITH_BENCHMARKS=OFF -DSPARROW_BUILD_TESTS=OFF >/dev/null
cmake --build build-fuzz -j "${SPARROW_JOBS:-2}" --target "fuzz_$target" sparrow_fuzz_seeds
build-fuzz/fuzz/sparrow_fuzz_seeds build-fuzz/fuzz/seeds
mkdir -p "build-fuzz/corpus/$target"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
exec "build-fuzz/fuzz/fuzz_$target" -max_total_time="$seconds" -malloc_limit_mb=256 -rss_limit_mb=2048 \
  -max_len=65536 -timeout=10 -print_final_stats=1 "$@" "build-fuzz/corpus/$target" "build-fuzz/fuzz/seeds/$target"
