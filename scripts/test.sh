#!/usr/bin/env bash
# Installs dependencies, builds, and runs the default test suite (no MNIST, no slow benchmarks).
# Extra arguments go to ctest, e.g. `scripts/test.sh -L mnist` for the MNIST accuracy check.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
if [ $# -eq 0 ]; then set -- -LE "mnist|slow"; fi
ctest --test-dir build --output-on-failure -j "${SPARROW_JOBS:-2}" "$@"
