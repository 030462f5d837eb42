#!/usr/bin/env bash
# Configures and builds Sparrow in ./build (Release, Ninja, 2 parallel jobs by default).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "${SPARROW_JOBS:-2}"
