#!/usr/bin/env bash
# Builds the runtime (no training, no benchmarks) with AddressSanitizer + UndefinedBehaviorSanitizer
# in build-asan/ and runs the default test suite there: once with the CPU's best kernels and once
# with the scalar ones (SPARROW_MAX_ISA=scalar). Any sanitizer report fails the run.
# Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARROW_SANITIZE=ON \
  -DSPARROW_WITH_TRAINING=OFF -DSPARROW_WITH_PYTHON=OFF -DSPARROW_WITH_BENCHMARKS=OFF >/dev/null
cmake --build build-asan -j "${SPARROW_JOBS:-2}"
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# The install check is left out: its consumer programs are built without the sanitizers.
if [ $# -eq 0 ]; then set -- -LE "mnist|slow|install"; fi
ctest --test-dir build-asan --output-on-failure -j "${SPARROW_JOBS:-2}" "$@"
SPARROW_MAX_ISA=scalar ctest --test-dir build-asan --output-on-failure -j "${SPARROW_JOBS:-2}" "$@"
